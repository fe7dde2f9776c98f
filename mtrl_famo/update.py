"""The MT-SAC update, written once: ``update(spec, state, batch, draws) -> (state, metrics)``.

One function, three uses:

- eager (``train.compile=none``): :meth:`MTSAC.update <mtrl_famo.sac.MTSAC.update>` calls it
  on the agent's own tensors;
- one graph (``train.compile=graph``): ``torch.compile(fullgraph=True)`` of it
  (:mod:`~mtrl_famo.graph_update`; CUDA graphs on CUDA);
- a population: ``torch.func.vmap`` of it over a leading member dimension of ``state``,
  ``batch`` and ``draws`` (:mod:`~mtrl_famo.stacked_sac`), compiled or not.

``state`` holds every tensor the update reads or writes, as plain trees: the actor, critic,
target critic and temperature parameters (``state["params"]``), the three Adam states
(``state["adam"]``) and each aggregator's state (``state["aggregators"]``). The update
writes the new values into these tensors in place and returns the same tree: the agent's
modules, optimizers and aggregators stay the truth (checkpoints unchanged, no copy per
step); ``torch.compile`` functionalises the writes and ``vmap`` writes through to the
stacked tensors. Networks run through ``torch.func.functional_call``; gradients come from
``torch.func`` (one batched pass for the ``[k, P]`` per-task gradients); Adam is
:func:`~mtrl_famo.optim.adam_step_`; aggregators are used through their functional entry
points (``combine_fn``, ``loss_weights_fn``, ``update_fn``). Every random number comes in
``draws``, drawn by the caller in a fixed order (:func:`make_draws`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple

import torch
from torch import Tensor, nn
from torch.func import functional_call

from mtrl_famo.aggregators.base import Aggregator
from mtrl_famo.aggregators.per_task_grads import gradient_diagnostic_tensors, per_task_gradients
from mtrl_famo.buffer import Batch
from mtrl_famo.networks import squashed_sample
from mtrl_famo.optim import AdamTensors, adam_step_
from mtrl_famo.step_rules import ACTION_BOUND

#: the networks (and temperatures) the update steps, each with an Adam of its own
OPTIMIZED = ("critic", "actor", "alpha")


class AdamHyper(NamedTuple):
    """One Adam's settings (the optimizer's param group): ``lr, beta1, beta2, eps, weight_decay``."""

    lr: float
    beta1: float
    beta2: float
    eps: float
    weight_decay: float


@dataclass(frozen=True, eq=False)
class UpdateSpec:
    """What the update is, as opposed to the tensors it changes.

    :param actor: the actor module, applied with ``functional_call`` (its own parameters unused).
    :param critic: the twin critic module, likewise (also for the target's parameters).
    :param cfg: :class:`~mtrl_famo.config.AgentConfig` (gamma, tau, clipping, loss forms).
    :param target_entropy: the temperatures' entropy target.
    :param aggregators: ``critic`` and ``actor`` (and ``alpha`` where ``aggregator.apply_to`` has it).
    :param adam: :class:`AdamHyper` per name in :data:`OPTIMIZED`.
    :param task_gradients: the ``[k, P]`` per-task gradients: one pass (default) or the k-pass reference.
    """

    actor: nn.Module
    critic: nn.Module
    cfg: object
    target_entropy: float
    aggregators: dict[str, Aggregator]
    adam: dict[str, AdamHyper]
    task_gradients: Callable = per_task_gradients


class Draws(NamedTuple):
    """The update's random numbers: the target's and the actor step's action noise
    ``[k, b, act_dim]`` each, and each aggregator's draws (PCGrad's orders, RLW's weights)."""

    next_noise: Tensor
    noise: Tensor
    aggregators: dict[str, tuple[Tensor, ...]]


def make_draws(spec: UpdateSpec, shape: tuple[int, int, int], generator: torch.Generator,
               device: torch.device) -> Draws:
    """The draws of one update, in the fixed order: target noise, actor noise, then the aggregators'."""
    next_noise = torch.randn(shape, generator=generator, device=device)
    noise = torch.randn(shape, generator=generator, device=device)
    return Draws(next_noise, noise, {name: agg.draws(device) for name, agg in spec.aggregators.items()})


def critic_loss(critic: nn.Module, params: dict, obs: Tensor, actions: Tensor, target: Tensor,
                max_q_value: float | None = None, reduction: str = "sum") -> Tensor:
    """Twin-Q squared TD error ``[...]``, the mean over the last (batch) dim; ``target`` ``[..., b]``.

    ``reduction`` (``agent.critic_loss_reduction``): ``sum`` gives ``L1 + L2``, ``mean``
    ``(L1 + L2) / 2``. With ``max_q_value``, predictions are clipped to ``[-max_q_value,
    max_q_value]`` (the target is clipped by :func:`update`), as the Meta-World+ reference's
    paper revision does.
    """
    q1, q2 = functional_call(critic, params, (obs, actions))
    if max_q_value is not None:
        q1, q2 = q1.clamp(-max_q_value, max_q_value), q2.clamp(-max_q_value, max_q_value)
    loss = (q1 - target).pow(2).mean(-1) + (q2 - target).pow(2).mean(-1)
    return loss / 2 if reduction == "mean" else loss


def actor_loss(actor: nn.Module, critic: nn.Module, params: dict, critic_params: dict, obs: Tensor,
               noise: Tensor, alpha: Tensor, clip_actions: bool = False) -> tuple[Tensor, Tensor]:
    """``alpha * log pi(a|s) - min Q(s, a)``, the mean over the last dim, and the detached
    log-probs ``[..., b]`` (the temperature loss reuses them: no second actor forward, as in
    the Meta-World+ and mtrl references). ``alpha`` ``[..., 1]``; the critic's are constants.
    ``clip_actions``: the critic sees the sample clipped to ``+-ACTION_BOUND``, the log-prob is
    the unclipped sample's (Meta-World+ ``nn/distributions.py:36-43``)."""
    action, log_prob = squashed_sample(*functional_call(actor, params, (obs,)), noise)
    q1, q2 = functional_call(critic, critic_params, (obs, _clipped(action, clip_actions)))
    return (alpha * log_prob - torch.min(q1, q2)).mean(-1), log_prob.detach()


def update(spec: UpdateSpec, state: dict, batch: Batch, draws: Draws,
           diagnostics: bool = False) -> tuple[dict, dict[str, Tensor]]:
    """One MT-SAC update: target, critic step, actor step, temperatures, target critic.

    :param state: ``{"params": {"actor", "critic", "critic_target": {name: tensor},
        "alpha": {"log_alpha": [A]}}, "adam": {name: {"exp_avg", "exp_avg_sq", "step": [tensor]}},
        "aggregators": {name: {...}}}``, ``A`` = k or 1 (``agent.shared_alpha``); updated in place.
    :param batch: rows grouped by task, ``[k, b, ...]``.
    :param diagnostics: also the per-task gradient statistics (cosine similarity, conflicts).
    :return: ``state`` and the metrics: ``losses/critic``, ``losses/actor``, ``losses/alpha``,
        ``alpha``, each ``[k]``; ``aggregator/<net>/weights`` ``[k]`` where the method has weights,
        the diagnostics and ``grad_norm/<net>`` (with ``agent.grad_clip``) as 0-dim tensors.
    """
    cfg, params = spec.cfg, state["params"]
    k, b = batch.rewards.shape
    with torch.no_grad():  # gradients come from torch.func only
        alpha = params["alpha"]["log_alpha"].exp().expand(k)  # [k]
        next_action, next_log_prob = squashed_sample(
            *functional_call(spec.actor, params["actor"], (batch.next_obs,)), draws.next_noise)
        q1_next, q2_next = functional_call(spec.critic, params["critic_target"],
                                           (batch.next_obs, _clipped(next_action, cfg.clip_actions)))
        soft_value = torch.min(q1_next, q2_next) - alpha[:, None] * next_log_prob
        target = batch.rewards + cfg.gamma * (1.0 - batch.terminated) * soft_value  # [k, b]
        if cfg.max_q_value is not None:
            target = target.clamp(-cfg.max_q_value, cfg.max_q_value)

        # agent.task_loss_weights=temperature: task i's critic and actor losses times k softmax(-log_alpha)_i
        # (constants, before the temperature step); else 1 (the losses as they are).
        log_alpha = params["alpha"]["log_alpha"]
        task_weights = (log_alpha.shape[0] * torch.softmax(-log_alpha, 0)).expand(k) \
            if cfg.task_loss_weights == "temperature" \
            else torch.ones_like(alpha)  # [k]
        metrics: dict[str, Tensor] = {}
        metrics["losses/critic"], _ = _network_step(
            spec, "critic", state,
            lambda p, *args: critic_loss(spec.critic, p, *args[:-1], cfg.max_q_value, cfg.critic_loss_reduction)
            * args[-1], False, (batch.obs, batch.actions, target, task_weights), draws, diagnostics, metrics)
        critic_params = dict(params["critic"])  # after its step, constants of the actor's loss
        metrics["losses/actor"], log_prob = _network_step(
            spec, "actor", state,
            lambda p, *args: _weighted(actor_loss(spec.actor, spec.critic, p, critic_params, *args[:-1],
                                                  cfg.clip_actions), args[-1]), True,
            (batch.obs, draws.noise, alpha[:, None], task_weights), draws, diagnostics, metrics)
        metrics["losses/alpha"] = _temperature_step(spec, state, log_prob, draws, metrics)
        polyak_update(params["critic"].values(), params["critic_target"].values(), cfg.tau)
        metrics["alpha"] = params["alpha"]["log_alpha"].exp().expand(k)
    return state, metrics


def _network_step(spec: UpdateSpec, name: str, state: dict, task_loss: Callable, has_aux: bool,
                  task_args: tuple, draws: Draws, diagnostics: bool,
                  metrics: dict[str, Tensor]) -> tuple[Tensor, Tensor | None]:
    """Combine one network's per-task losses with its aggregator and take one Adam step.

    :param task_loss: ``task_loss(params, *task_args)`` -> ``[k]`` losses (and ``[k, b]`` aux with
        ``has_aux``) on task-grouped args, or one task's scalar on one task's rows.
    :return: the ``[k]`` losses before the step and the aux (the actor's log-probs; None for the critic).
    """
    aggregator, agg_state = spec.aggregators[name], state["aggregators"][name]
    params = state["params"][name]
    module = spec.actor if name == "actor" else spec.critic
    aux = None
    if aggregator.uses_task_gradients or diagnostics:
        G, _, losses, *extra = spec.task_gradients(module, task_loss, task_args, params, return_losses=True,
                                                   has_aux=has_aux)  # [k, P], [k]
        aux = extra[0] if has_aux else None
    if diagnostics:
        for key, value in gradient_diagnostic_tensors(G).items():
            metrics[f"aggregator/{name}/{key}"] = value
    if aggregator.uses_task_gradients:
        direction, weights = aggregator.combine_fn(agg_state, G, *draws.aggregators[name])  # [P], [k]
        grads = list(direction.split([p.numel() for p in params.values()]))
        grads = [g.view_as(p) for g, p in zip(grads, params.values())]
    else:
        out = torch.func.vjp(lambda p: task_loss(p, *task_args), dict(params), has_aux=has_aux)
        losses, pullback, aux = out if has_aux else (*out, None)  # [k]
        loss_weights = aggregator.loss_weights_fn(agg_state, losses, *draws.aggregators[name])  # [k]
        (grad_of,) = pullback(loss_weights.to(losses.dtype))
        grads = [grad_of[key] for key in params]
    if spec.cfg.grad_clip is not None:
        grads, metrics[f"grad_norm/{name}"] = _clip(grads, spec.cfg.grad_clip)
    _adam_step(spec, name, state, list(params.values()), grads)
    if aggregator.needs_update:  # FAMO learns its weights from the step's effect on the losses
        new_losses = task_loss(params, *task_args)
        aggregator.update_fn(agg_state, losses, new_losses[0] if has_aux else new_losses)
    if not aggregator.uses_task_gradients:
        weights = aggregator.task_weights_fn(agg_state, loss_weights)
    if weights is not None:
        metrics[f"aggregator/{name}/weights"] = weights
    return losses, aux


def _temperature_step(spec: UpdateSpec, state: dict, log_prob: Tensor, draws: Draws,
                      metrics: dict[str, Tensor]) -> Tensor:
    """One Adam step of the log-temperatures ``[A]`` from the actor step's log-probs ``[k, b]``.

    Task ``i``'s loss is ``-f(log_alpha_i) mean_b(log_pi + target_entropy)``, ``f`` the identity
    (``agent.alpha_loss_form=log_alpha``) or ``exp`` (``alpha``, mtrl's form). Its gradient row
    ``J_i`` ``[A]`` is nonzero at task ``i``'s temperature only (at the shared one with
    ``agent.shared_alpha``). The step follows ``sum_i w_i J_i``: ``w = 1`` (per-task temperatures,
    ``agent.alpha_loss_reduction=task_sum``: each its own task's gradient), ``w = 1/k`` (a shared
    temperature, or ``mean``: the mean over all ``k * b`` rows), or the aggregator's combination of
    the rows where ``aggregator.apply_to`` has ``alpha``.

    :return: the ``[k]`` temperature losses before the step.
    """
    cfg = spec.cfg
    log_alpha = state["params"]["alpha"]["log_alpha"]  # [A]
    k = log_prob.shape[0]
    exp_form = cfg.alpha_loss_form == "alpha"
    coef = -(log_prob + spec.target_entropy).mean(-1)  # [k], d loss_i / d f(log_alpha_i)
    slope = log_alpha.exp() if exp_form else torch.ones_like(log_alpha)  # f'(log_alpha), [A]
    losses = (log_alpha.exp() if exp_form else log_alpha).expand(k) * coef  # [k]
    rows = coef[:, None] * (torch.eye(k, dtype=coef.dtype, device=coef.device) if log_alpha.shape[0] == k
                            else torch.ones(k, 1, dtype=coef.dtype, device=coef.device)) * slope  # J, [k, A]
    aggregator = spec.aggregators.get("alpha")
    if aggregator is None:
        per_task_sum = log_alpha.shape[0] == k and cfg.alpha_loss_reduction == "task_sum"
        grad = rows.sum(0) if per_task_sum else rows.mean(0)  # [A]
    elif aggregator.uses_task_gradients:
        grad, weights = aggregator.combine_fn(state["aggregators"]["alpha"], rows, *draws.aggregators["alpha"])
    else:
        loss_weights = aggregator.loss_weights_fn(state["aggregators"]["alpha"], losses, *draws.aggregators["alpha"])
        grad = loss_weights.to(rows.dtype) @ rows
    _adam_step(spec, "alpha", state, [log_alpha], [grad])
    if aggregator is not None:
        if aggregator.needs_update:
            new_losses = (log_alpha.exp() if exp_form else log_alpha).expand(k) * coef
            aggregator.update_fn(state["aggregators"]["alpha"], losses, new_losses)
        if not aggregator.uses_task_gradients:
            weights = aggregator.task_weights_fn(state["aggregators"]["alpha"], loss_weights)
        if weights is not None:
            metrics["aggregator/alpha/weights"] = weights
    return losses


def _weighted(loss_and_log_prob: tuple[Tensor, Tensor], weight: Tensor) -> tuple[Tensor, Tensor]:
    loss, log_prob = loss_and_log_prob
    return loss * weight, log_prob


def _clipped(action: Tensor, clip: bool) -> Tensor:
    return action.clamp(-ACTION_BOUND, ACTION_BOUND) if clip else action


def _clip(grads: list[Tensor], max_norm: float) -> tuple[list[Tensor], Tensor]:
    """Scale ``grads`` to global norm at most ``max_norm`` (``clip_grad_norm_``'s rule, on the device);
    also return the norm before clipping."""
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    scale = (max_norm / (norm + 1e-6)).clamp(max=1.0)
    return [g * scale for g in grads], norm


def _adam_step(spec: UpdateSpec, name: str, state: dict, params: list[Tensor], grads: list[Tensor]) -> None:
    adam = state["adam"][name]
    adam_step_(AdamTensors(params, adam["exp_avg"], adam["exp_avg_sq"], adam["step"], *spec.adam[name]), grads)


@torch.no_grad()
def polyak_update(params, target_params, tau: float) -> None:
    """``target <- target + tau (online - target)``, in place (``lerp``'s formula for ``tau < 0.5``).

    Eagerly one multi-tensor kernel; compiled or vmapped, per tensor (vmap has no rule for it).
    """
    targets, params = list(target_params), list(params)
    if not torch.compiler.is_compiling() and not torch._C._functorch.is_batchedtensor(targets[0]):
        torch._foreach_lerp_(targets, params, tau)
        return
    for target, param in zip(targets, params):
        target.add_(param - target, alpha=tau)
