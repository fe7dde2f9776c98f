"""Multi-task soft actor-critic: per-task loss vectors and the update step.

Every loss is computed per task, as a ``[num_tasks]`` vector, from a batch whose
rows are grouped by task (:class:`~mtrl_famo.buffer.Batch`). The critic and
actor vectors go to an aggregator, which turns them into one update of that
network: loss-weighting aggregators (mean, FAMO, UW, DWA, RLW) take the loss vector,
gradient aggregators (PCGrad, CAGrad, MGDA, IMTL-G, Aligned-MTL, UPGrad, DualProj,
FairGrad, Nash-MTL) take the ``[num_tasks, num_params]`` per-task gradients, built with
one batched backward. The per-task temperatures are
independent parameters, so their losses are simply summed (a shared temperature,
``agent.shared_alpha``, takes their mean); their loss uses the log-probabilities
of the actor step's own forward.
"""

from __future__ import annotations

import copy
import math
from typing import Callable

import numpy as np
import torch
from torch.func import functional_call

from mtrl_famo.aggregators import make_aggregator
from mtrl_famo.aggregators.per_task_grads import assign_flat_grad, gradient_diagnostics, per_task_gradients
from mtrl_famo.buffer import Batch
from mtrl_famo.config import AgentConfig, AggregatorConfig, aggregator_options
from mtrl_famo.graph_update import GraphUpdate
from mtrl_famo.networks import Actor, TwinQ, squashed_sample
from mtrl_famo.optim import fused_adam, load_fused_adam_state

TaskLoss = Callable[..., torch.Tensor]


def critic_loss_fn(critic: TwinQ, max_q_value: float | None = None) -> TaskLoss:
    """``loss(params, obs, actions, target)``: twin-Q squared TD error, averaged over the last batch dim.

    With task-grouped inputs (``obs [num_tasks, b, obs_dim]``, ``target [num_tasks, b]``) it
    returns the ``[num_tasks]`` loss vector; with one task's rows, that task's scalar loss.
    With ``max_q_value``, predictions are clipped to ``[-max_q_value, max_q_value]`` (the target
    is clipped by the caller), as the Meta-World+ reference does.
    """

    def loss(params: dict, obs: torch.Tensor, actions: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        q1, q2 = functional_call(critic, params, (obs, actions))
        if max_q_value is not None:
            q1, q2 = q1.clamp(-max_q_value, max_q_value), q2.clamp(-max_q_value, max_q_value)
        return (q1 - target).pow(2).mean(-1) + (q2 - target).pow(2).mean(-1)

    return loss


def actor_loss_fn(actor: Actor, critic: TwinQ) -> TaskLoss:
    """``loss(params, obs, noise, alpha) -> (loss, log_prob)``: ``alpha * log pi(a|s) - min Q(s, a)``
    averaged over the last batch dim, and the sampled actions' log-probabilities (detached).

    ``alpha`` is ``[num_tasks, 1]`` for task-grouped inputs (``[1]`` for one task), so each
    task's rows use that task's temperature. The critic's parameters are constants here.
    The log-probabilities ``[num_tasks, b]`` feed the temperature loss, so that it needs no
    second actor forward (as in the Meta-World+ and mtrl references).
    """

    def loss(params: dict, obs: torch.Tensor, noise: torch.Tensor, alpha: torch.Tensor):
        return actor_loss(actor, critic, params, None, obs, noise, alpha)

    return loss


def actor_loss(actor: Actor, critic: TwinQ, params: dict, critic_params: dict | None, obs: torch.Tensor,
               noise: torch.Tensor, alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The pure actor loss of :func:`actor_loss_fn`, with the critic's parameters passed in.

    :param critic_params: ``{name: tensor}`` for ``critic`` (constants), or None for the
        critic module's own parameters. A population passes each member's critic here.
    :return: loss ``[...]`` (mean over the last batch dim) and detached log-probs ``[..., b]``.
    """
    mean, log_std = functional_call(actor, params, (obs,))
    action, log_prob = squashed_sample(mean, log_std, noise)
    q1, q2 = critic(obs, action) if critic_params is None else functional_call(critic, critic_params, (obs, action))
    return (alpha * log_prob - torch.min(q1, q2)).mean(-1), log_prob.detach()


def sample_noise(shape: tuple[int, ...], generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """Standard normal noise ``shape`` drawn from ``generator`` (the agent's own random stream)."""
    return torch.randn(shape, generator=generator, device=device)


def continue_global_stream(device: torch.device) -> torch.Generator:
    """A generator on ``device`` that continues torch's global stream from here (a copy of its state).

    The agent draws its action, update and replay-sampling noise from a generator of its
    own, so that a population can give every member the stream its single run would use.
    Started as a copy of the global state right after the networks are initialised, it
    draws exactly the numbers the global stream would have drawn.
    """
    generator = torch.Generator(device)
    generator.set_state(torch.cuda.get_rng_state(device) if device.type == "cuda" else torch.get_rng_state())
    return generator


@torch.no_grad()
def polyak_update(params, target_params, tau: float) -> None:
    """``target <- (1 - tau) target + tau * online``, in place (one multi-tensor kernel on CUDA)."""
    torch._foreach_lerp_(list(target_params), list(params), tau)


class MTSAC:
    """The agent: actor, twin critic with target, per-task temperatures, optimizers, aggregators.

    :param obs_dim: observation width including the task one-hot.
    :param act_dim: action width.
    :param num_tasks: number of tasks ``k``.
    :param cfg: network sizes, learning rates, gamma, tau, temperature settings.
    :param aggregator_cfg: aggregator name, options and the losses it applies to.
    :param device: where networks and aggregator state live.
    :param task_gradients: builds the ``[num_tasks, num_params]`` gradient matrix; the
        one-pass ``per_task_gradients`` (default) or the k-pass ``per_task_gradients_loop``
        reference, same signature.
    :param immediate_checks: the aggregators check their inputs for NaN/inf at every call
        (a host sync each). The training loop passes False and watches ``watched_metrics()``
        with a :class:`~mtrl_famo.nonfinite.NonFiniteWatch` instead, so that an update
        makes no host sync (the aggregators with a host solver, MGDA, UPGrad, DualProj,
        FairGrad and Nash-MTL, still read their ``[k, k]`` Gram matrix once).
    :param compile_mode: ``none``; ``task_gradients``: ``torch.compile`` the ``task_gradients``
        function (gradient aggregators, diagnostics); ``all``: also the loss functions used
        on the whole batch (loss-weighting aggregators); ``graph``: the whole update as one graph
        (:mod:`~mtrl_famo.graph_update`; CUDA graphs on CUDA; the aggregators' immediate
        checks off). Same results to float tolerance; the first updates pay the compilation.
    """

    def __init__(self, obs_dim: int, act_dim: int, num_tasks: int, cfg: AgentConfig,
                 aggregator_cfg: AggregatorConfig, device: torch.device | str = "cpu",
                 task_gradients: Callable = per_task_gradients, immediate_checks: bool = True,
                 compile_mode: str = "none"):
        self.num_tasks = num_tasks
        self.act_dim = act_dim
        self.cfg = cfg
        self.device = torch.device(device)
        nets = dict(num_tasks=num_tasks, multi_head=cfg.multi_head, init=cfg.init)
        self.actor = Actor(obs_dim, act_dim, cfg.hidden_sizes, cfg.log_std_min, cfg.log_std_max,
                           log_std_mode=cfg.log_std_mode, **nets).to(self.device)
        self.critic = TwinQ(obs_dim, act_dim, cfg.hidden_sizes, **nets).to(self.device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        # One temperature per task, or one shared by all (shape [1], broadcast over tasks).
        num_alphas = 1 if cfg.shared_alpha else num_tasks
        self.log_alpha = torch.full((num_alphas,), math.log(cfg.init_alpha), device=self.device, requires_grad=True)
        self.target_entropy = -float(act_dim) if cfg.target_entropy is None else cfg.target_entropy

        self.actor_opt = fused_adam(self.actor.parameters(), lr=cfg.actor_lr, eps=cfg.adam_eps)
        self.critic_opt = fused_adam(self.critic.parameters(), lr=cfg.critic_lr, eps=cfg.adam_eps)
        self.alpha_opt = fused_adam([self.log_alpha], lr=cfg.alpha_lr, eps=cfg.adam_eps)

        options = aggregator_options(aggregator_cfg)
        self.aggregators = {
            loss: (make_aggregator(aggregator_cfg.name, num_tasks=num_tasks, **options)
                   if loss in aggregator_cfg.apply_to else make_aggregator("mean", num_tasks=num_tasks))
            for loss in ("critic", "actor")
        }
        for agg in self.aggregators.values():
            agg.to(self.device)
            agg.immediate_checks = immediate_checks
        # Each network's per-task loss, as given to task_gradients (which vmaps it) and
        # as called directly on the whole batch; compiled, the two must be separate
        # callables, since a compiled function cannot be traced into from inside vmap.
        self._task_loss = {"critic": critic_loss_fn(self.critic, cfg.max_q_value),
                           "actor": actor_loss_fn(self.actor, self.critic)}
        self._has_aux = {"critic": False, "actor": True}  # the actor's loss also returns its log-probs
        compile_losses, compile_gradients = compile_mode == "all", compile_mode in ("task_gradients", "all")
        self._batch_loss = {name: torch.compile(fn) if compile_losses else fn for name, fn in self._task_loss.items()}
        self.task_gradients = torch.compile(task_gradients) if compile_gradients else task_gradients
        #: the agent's own random stream: actions, update noise, replay sampling (``Trainer``).
        self.generator = continue_global_stream(self.device)
        #: ``compile_mode="graph"``: the whole update as one compiled graph.
        self.graph_update = GraphUpdate(self) if compile_mode == "graph" else None

    def watched_metrics(self) -> dict[str, str]:
        """The ``[num_tasks]`` metrics of ``update`` that a NaN/inf anywhere in it reaches, with a hint each.

        The losses and temperatures, and the weights of aggregators that learn them on the
        device (FAMO), whose state would otherwise carry a NaN into the next checkpoint.
        """
        watched = dict.fromkeys(("losses/critic", "losses/actor", "losses/alpha", "alpha"), "")
        for name, aggregator in self.aggregators.items():
            if aggregator.needs_update:
                watched[f"aggregator/{name}/weights"] = (
                    f"{aggregator!r} takes log(loss - min_losses), so every {name} task loss must stay above "
                    f"aggregator.min_losses")
        return watched

    @torch.no_grad()
    def act(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        """Actions for a ``[n, obs_dim]`` observation array, as a ``[n, act_dim]`` numpy array."""
        obs_t = torch.as_tensor(obs, dtype=torch.float32, device=self.device)
        if deterministic:
            action = self.actor.deterministic(obs_t)
        else:
            action = self.actor.sample(obs_t, sample_noise((*obs_t.shape[:-1], self.act_dim), self.generator,
                                                           self.device))[0]
        return action.cpu().numpy()

    def update(self, batch: Batch, diagnostics: bool = False) -> dict[str, torch.Tensor]:
        """One MT-SAC update (critic, actor, temperatures, target critic) on a task-grouped batch.

        :param batch: rows grouped by task, ``[num_tasks, per_task_batch, ...]``.
        :param diagnostics: also compute the per-task gradient statistics (cosine similarity,
            conflicts) where the aggregator does not need per-task gradients anyway.
        :return: metrics as tensors (no host sync): ``losses/critic``, ``losses/actor``,
            ``losses/alpha``, ``alpha``, each ``[num_tasks]``; aggregator weights and
            gradient diagnostics where available.
        """
        if self.graph_update is not None:
            return self.graph_update(batch, diagnostics)
        k, b = batch.rewards.shape
        alpha = self.log_alpha.detach().exp().expand(k)  # [k]
        with torch.no_grad():
            next_noise = sample_noise((k, b, self.act_dim), self.generator, self.device)
            next_action, next_log_prob = self.actor.sample(batch.next_obs, next_noise)
            q1_next, q2_next = self.critic_target(batch.next_obs, next_action)
            soft_value = torch.min(q1_next, q2_next) - alpha[:, None] * next_log_prob
            target = batch.rewards + self.cfg.gamma * (1.0 - batch.terminated) * soft_value  # [k, b]
            if self.cfg.max_q_value is not None:
                target = target.clamp(-self.cfg.max_q_value, self.cfg.max_q_value)

        metrics: dict[str, torch.Tensor] = {}
        metrics["losses/critic"], _ = self._aggregated_step(
            "critic", self.critic, self.critic_opt, (batch.obs, batch.actions, target), diagnostics, metrics)

        noise = sample_noise((k, b, self.act_dim), self.generator, self.device)
        self.critic.requires_grad_(False)  # the actor's loss must not build critic gradients
        try:
            metrics["losses/actor"], log_prob = self._aggregated_step(
                "actor", self.actor, self.actor_opt, (batch.obs, noise, alpha[:, None]), diagnostics, metrics)
        finally:
            self.critic.requires_grad_(True)

        # The temperature loss takes the log-probs of the actor step's own forward ([k, b]).
        log_alpha = self.log_alpha.expand(k)
        alpha_losses = -(log_alpha[:, None] * (log_prob + self.target_entropy)).mean(-1)  # [k]
        self.alpha_opt.zero_grad(set_to_none=True)
        # Per-task temperatures: each gets its own task's gradient; a shared one, the tasks' mean.
        (alpha_losses.mean() if self.cfg.shared_alpha else alpha_losses.sum()).backward()
        self.alpha_opt.step()

        polyak_update(self.critic.parameters(), self.critic_target.parameters(), self.cfg.tau)
        metrics["losses/alpha"] = alpha_losses.detach()
        metrics["alpha"] = self.log_alpha.detach().exp().expand(k)
        return metrics

    def _aggregated_step(self, name: str, module: torch.nn.Module, optimizer: torch.optim.Optimizer,
                         task_args: tuple, diagnostics: bool,
                         metrics: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Combine one network's per-task losses with its aggregator and take one optimizer step.

        With ``agent.grad_clip``, the combined update is clipped to that global norm before the
        step (no host sync: ``clip_grad_norm_`` scales by ``min(1, clip / norm)`` on the device);
        the norm before clipping is logged as ``grad_norm/<name>``.

        :param name: ``critic`` or ``actor``: which loss, aggregator and metrics.
        :param task_args: tensors with a leading task dimension, the loss's inputs after ``params``.
        :return: the ``[num_tasks]`` losses before the step (detached), and the loss's auxiliary
            output (the actor's ``[num_tasks, b]`` log-probs; None for the critic).
        """
        aggregator = self.aggregators[name]
        loss_fn = self._batch_loss[name]
        has_aux = self._has_aux[name]
        params = dict(module.named_parameters())
        aux = None
        if aggregator.uses_task_gradients or diagnostics:
            grads, _, losses, *extra = self.task_gradients(module, self._task_loss[name], task_args,
                                                           return_losses=True, has_aux=has_aux)  # [k, P], [k]
            aux = extra[0] if has_aux else None
        if diagnostics:
            for key, value in gradient_diagnostics(grads).items():
                metrics[f"aggregator/{name}/{key}"] = torch.as_tensor(value)
        if aggregator.uses_task_gradients:
            direction = aggregator.combine(grads)
            optimizer.zero_grad(set_to_none=True)
            assign_flat_grad(module, direction)
        else:
            losses, aux = loss_fn(params, *task_args) if has_aux else (loss_fn(params, *task_args), None)  # [k]
            combined = aggregator.combine_losses(losses)
            optimizer.zero_grad(set_to_none=True)
            for p, g in zip(params.values(), torch.autograd.grad(combined, list(params.values()))):
                p.grad = g
        if self.cfg.grad_clip is not None:
            metrics[f"grad_norm/{name}"] = torch.nn.utils.clip_grad_norm_(
                params.values(), self.cfg.grad_clip, foreach=True).detach()
        optimizer.step()
        if aggregator.needs_update:  # FAMO learns its weights from the step's effect on the losses
            with torch.no_grad():
                new_losses = loss_fn(params, *task_args)
                aggregator.update(new_losses[0] if has_aux else new_losses)
        weights = aggregator.task_weights  # computed by the property: read it once
        if weights is not None:
            metrics[f"aggregator/{name}/weights"] = weights.detach()
        return losses.detach(), aux

    def state_dict(self) -> dict:
        """Everything needed to resume training exactly: networks, temperatures, optimizers, aggregators."""
        return {
            "actor": self.actor.state_dict(),
            "critic": self.critic.state_dict(),
            "critic_target": self.critic_target.state_dict(),
            "log_alpha": self.log_alpha.detach().clone(),
            "actor_opt": self.actor_opt.state_dict(),
            "critic_opt": self.critic_opt.state_dict(),
            "alpha_opt": self.alpha_opt.state_dict(),
            "aggregators": {name: agg.state_dict() for name, agg in self.aggregators.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        self.actor.load_state_dict(state["actor"])
        self.critic.load_state_dict(state["critic"])
        self.critic_target.load_state_dict(state["critic_target"])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        load_fused_adam_state(self.actor_opt, state["actor_opt"])
        load_fused_adam_state(self.critic_opt, state["critic_opt"])
        load_fused_adam_state(self.alpha_opt, state["alpha_opt"])
        for name, agg in self.aggregators.items():
            agg.load_state_dict(state["aggregators"][name])
