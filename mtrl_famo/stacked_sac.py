"""MT-SAC for a population: ``N`` members' updates as one call over stacked parameters.

Every member of a population (:mod:`mtrl_famo.population`) is an ordinary
:class:`~mtrl_famo.sac.MTSAC` (its networks, target, optimizers, temperatures,
aggregators and random stream), built exactly as its single run builds it. This
module stacks the members' parameters and optimizer states along a leading member
dimension ``N`` and runs the MT-SAC update of :meth:`MTSAC.update` for all of them
at once: the loss functions of :mod:`mtrl_famo.sac` under ``torch.func.vmap`` over
the member dimension (and, for the per-task gradients of PCGrad/CAGrad, a second
``vmap`` over the task dimension: ``G`` is ``[N, num_tasks, num_params]``), one Adam
step per network over the stacked tensors (Adam is elementwise, so that is ``N``
Adams), and the aggregators in their stacked form (:mod:`mtrl_famo.aggregators.stacked`).

Each member still draws its noise from its own generator, in the order its single
run draws it, so member ``i`` computes what the single run with seed ``i`` computes,
to float tolerance (batched matmuls round differently from single ones).

While training, the stacked tensors are the truth; :meth:`StackedMTSAC.write_back`
copies them into the member objects (for evaluation, videos and checkpoints) and
:meth:`StackedMTSAC.load_from_members` reads them back (at the start, after a resume).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torch.func import functional_call, grad_and_value, vmap

from mtrl_famo.aggregators.per_task_grads import gradient_diagnostics
from mtrl_famo.aggregators.stacked import stack_aggregators
from mtrl_famo.buffer import Batch
from mtrl_famo.networks import squashed_sample
from mtrl_famo.optim import fused_adam
from mtrl_famo.sac import MTSAC, actor_loss, critic_loss_fn, sample_noise

NETWORKS = ("actor", "critic", "critic_target")


class StackedMTSAC:
    """``N`` :class:`MTSAC` members of one configuration, updated as one.

    :param members: the members, built with the same configuration (their own seeds).
    """

    def __init__(self, members: list[MTSAC]):
        if not members:
            raise ValueError("a population needs at least one member")
        first = members[0]
        self.members = list(members)
        self.num_members = len(members)
        self.num_tasks, self.act_dim, self.cfg, self.device = first.num_tasks, first.act_dim, first.cfg, first.device
        self.target_entropy = first.target_entropy
        # The member-0 modules serve as the functional templates of functional_call.
        self.actor_module, self.critic_module = first.actor, first.critic
        self.params: dict[str, dict[str, Tensor]] = {
            net: {name: torch.stack([dict(getattr(m, net).named_parameters())[name].detach() for m in members])
                  .requires_grad_(net != "critic_target")
                  for name, _ in getattr(first, net).named_parameters()}
            for net in NETWORKS
        }  # {net: {name: [N, *shape]}}
        self.log_alpha = torch.stack([m.log_alpha.detach() for m in members]).requires_grad_(True)  # [N, A]
        cfg = self.cfg
        self.optimizers = {
            "actor": fused_adam(self.params["actor"].values(), lr=cfg.actor_lr, eps=cfg.adam_eps),
            "critic": fused_adam(self.params["critic"].values(), lr=cfg.critic_lr, eps=cfg.adam_eps),
            "alpha": fused_adam([self.log_alpha], lr=cfg.alpha_lr, eps=cfg.adam_eps),
        }
        self.aggregators = {name: stack_aggregators([m.aggregators[name] for m in members])
                            for name in ("critic", "actor")}
        self._critic_loss = critic_loss_fn(self.critic_module, cfg.max_q_value)
        self.load_from_members()

    # ------------------------------------------------------------------ members <-> stacked
    def _member_tensors(self, member: MTSAC) -> dict[str, list[Tensor]]:
        """Each stacked group's member-side tensors, in the stacked order."""
        return {
            **{net: list(getattr(member, net).parameters()) for net in NETWORKS},
            "alpha": [member.log_alpha],
        }

    def _stacked_tensors(self) -> dict[str, list[Tensor]]:
        return {**{net: list(self.params[net].values()) for net in NETWORKS}, "alpha": [self.log_alpha]}

    def _member_optimizer(self, member: MTSAC, name: str) -> torch.optim.Optimizer:
        return {"actor": member.actor_opt, "critic": member.critic_opt, "alpha": member.alpha_opt}[name]

    @torch.no_grad()
    def load_from_members(self) -> None:
        """Stack the members' parameters, optimizer states and aggregator states."""
        stacked = self._stacked_tensors()
        per_member = [self._member_tensors(m) for m in self.members]
        for group, tensors in stacked.items():
            for j, t in enumerate(tensors):
                t.copy_(torch.stack([pm[group][j] for pm in per_member]))
        for name, optimizer in self.optimizers.items():
            optimizer.state.clear()
            member_opts = [self._member_optimizer(m, name) for m in self.members]
            for j, p in enumerate(stacked[name]):
                states = [opt.state.get(pm[name][j]) for opt, pm in zip(member_opts, per_member)]
                if not states[0]:
                    continue
                optimizer.state[p] = {
                    "step": states[0]["step"].to(p.device, torch.float32).clone(),
                    **{key: torch.stack([s[key] for s in states]).to(p.device)
                       for key in ("exp_avg", "exp_avg_sq")},
                }
        for aggregator in self.aggregators.values():
            aggregator.load_from_members()

    @torch.no_grad()
    def write_back(self) -> None:
        """Copy the stacked state into the members (before they evaluate, film or save)."""
        stacked = self._stacked_tensors()
        for i, member in enumerate(self.members):
            tensors = self._member_tensors(member)
            for group, stacked_group in stacked.items():
                for t, s in zip(tensors[group], stacked_group):
                    t.copy_(s[i])
            for name, optimizer in self.optimizers.items():
                member_opt = self._member_optimizer(member, name)
                for p, s in zip(tensors[name], stacked[name]):
                    state = optimizer.state.get(s)
                    if state:
                        member_opt.state[p] = {"step": state["step"].clone(), "exp_avg": state["exp_avg"][i].clone(),
                                               "exp_avg_sq": state["exp_avg_sq"][i].clone()}
        for aggregator in self.aggregators.values():
            aggregator.write_to_members()

    # ------------------------------------------------------------------ acting
    @torch.no_grad()
    def act(self, obs: np.ndarray) -> np.ndarray:
        """Sampled actions of every member: ``obs`` ``[N, n, obs_dim]`` -> ``[N, n, act_dim]`` (numpy).

        Member ``i``'s noise comes from its own generator, as in :meth:`MTSAC.act`.
        """
        obs_t = torch.as_tensor(obs, dtype=torch.float32, device=self.device)
        noise = self._noise(obs_t.shape[1:-1])

        def one(params: dict, o: Tensor, n: Tensor) -> Tensor:
            return squashed_sample(*functional_call(self.actor_module, params, (o,)), n)[0]

        return vmap(one)(self.params["actor"], obs_t, noise).cpu().numpy()

    def _noise(self, shape: tuple[int, ...]) -> Tensor:
        """``[N, *shape, act_dim]`` standard normal noise, member ``i``'s from its generator."""
        return torch.stack([sample_noise((*shape, self.act_dim), m.generator, self.device) for m in self.members])

    def sample(self, buffers: list, per_task_batch: int) -> Batch:
        """One replay batch per member (each from its buffer, drawn with its generator), stacked:
        every field ``[N, num_tasks, per_task_batch, ...]``."""
        batches = [buffer.sample(per_task_batch, m.generator) for buffer, m in zip(buffers, self.members)]
        return Batch(*(torch.stack(field) for field in zip(*batches)))

    # ------------------------------------------------------------------ the update
    def update(self, batch: Batch, diagnostics: bool = False) -> dict[str, Tensor]:
        """One MT-SAC update of every member (what :meth:`MTSAC.update` does, member by member).

        :param batch: every field ``[N, num_tasks, per_task_batch, ...]``.
        :param diagnostics: also compute each member's per-task gradient statistics.
        :return: metrics as :meth:`MTSAC.update` returns them with a leading member
            dimension: ``[N, num_tasks]`` for the per-task vectors, ``[N]`` for scalars.
        """
        n, k, b = batch.rewards.shape
        cfg = self.cfg
        alpha = self.log_alpha.detach().exp().expand(n, k)  # [N, k]
        critic_module = self.critic_module
        with torch.no_grad():
            next_noise = self._noise((k, b))

            def soft_target(actor_p, target_p, alpha_m, next_obs, rewards, terminated, noise):
                next_action, next_log_prob = squashed_sample(
                    *functional_call(self.actor_module, actor_p, (next_obs,)), noise)
                q1, q2 = functional_call(critic_module, target_p, (next_obs, next_action))
                soft_value = torch.min(q1, q2) - alpha_m[:, None] * next_log_prob
                return rewards + cfg.gamma * (1.0 - terminated) * soft_value  # [k, b]

            target = vmap(soft_target)(self.params["actor"], self.params["critic_target"], alpha, batch.next_obs,
                                       batch.rewards, batch.terminated, next_noise)
            if cfg.max_q_value is not None:
                target = target.clamp(-cfg.max_q_value, cfg.max_q_value)

        metrics: dict[str, Tensor] = {}
        metrics["losses/critic"], _ = self._aggregated_step(
            "critic", self._critic_loss, False, None, (batch.obs, batch.actions, target), diagnostics, metrics)

        noise = self._noise((k, b))
        critic_params = {name: p.detach() for name, p in self.params["critic"].items()}

        def actor_task_loss(params, critic_p, obs, noise_, alpha_):
            return actor_loss(self.actor_module, critic_module, params, critic_p, obs, noise_, alpha_)

        metrics["losses/actor"], log_prob = self._aggregated_step(
            "actor", actor_task_loss, True, critic_params, (batch.obs, noise, alpha[:, :, None]), diagnostics,
            metrics)

        log_alpha = self.log_alpha.expand(n, k)
        alpha_losses = -(log_alpha[:, :, None] * (log_prob + self.target_entropy)).mean(-1)  # [N, k]
        optimizer = self.optimizers["alpha"]
        optimizer.zero_grad(set_to_none=True)
        (alpha_losses.mean(-1) if cfg.shared_alpha else alpha_losses.sum(-1)).sum().backward()
        optimizer.step()

        torch._foreach_lerp_(list(self.params["critic_target"].values()), list(self.params["critic"].values()),
                             cfg.tau)
        metrics["losses/alpha"] = alpha_losses.detach()
        metrics["alpha"] = self.log_alpha.detach().exp().expand(n, k)
        return metrics

    def _aggregated_step(self, name: str, loss_fn, has_aux: bool, constants: dict | None, task_args: tuple,
                         diagnostics: bool, metrics: dict[str, Tensor]) -> tuple[Tensor, Tensor | None]:
        """Every member's aggregated step of one network (:meth:`MTSAC._aggregated_step`, stacked).

        :param loss_fn: ``loss_fn(params, [constants,] *task_args)``; on task-grouped inputs it
            returns the ``[num_tasks]`` losses (and ``[num_tasks, b]`` aux with ``has_aux``).
        :param constants: per-member constants of the loss (the actor's critic parameters), or None.
        :param task_args: tensors ``[N, num_tasks, ...]``.
        :return: ``[N, num_tasks]`` losses before the step and the aux ``[N, num_tasks, b]`` (or None).
        """
        aggregator = self.aggregators[name]
        params = self.params[name]
        extra = () if constants is None else (constants,)

        batch_losses = vmap(loss_fn)  # every member's [k] losses (and aux)
        aux = None
        if aggregator.uses_task_gradients or diagnostics:
            detached = {key: p.detach() for key, p in params.items()}
            per_task = vmap(grad_and_value(loss_fn, has_aux=has_aux),
                            in_dims=(None,) * (1 + len(extra)) + (0,) * len(task_args))
            with torch.no_grad():
                grads, value = vmap(per_task)(detached, *extra, *task_args)  # {name: [N, k, *shape]}
            losses, aux = value if has_aux else (value, None)
            G = torch.cat([g.flatten(2) for g in grads.values()], dim=2)  # [N, k, P]
            if diagnostics:
                stats = [gradient_diagnostics(g) for g in G]
                for key in stats[0]:
                    metrics[f"aggregator/{name}/{key}"] = torch.tensor([s[key] for s in stats])
        optimizer = self.optimizers[name]
        optimizer.zero_grad(set_to_none=True)
        if aggregator.uses_task_gradients:
            direction = aggregator.combine(G)  # [N, P]
            offset = 0
            for p in params.values():
                size = p[0].numel()
                p.grad = direction[:, offset:offset + size].reshape(p.shape).clone()
                offset += size
        else:
            out = batch_losses(params, *extra, *task_args)
            losses, aux = out if has_aux else (out, None)  # [N, k]
            combined = aggregator.combine_losses(losses)  # [N]
            for p, g in zip(params.values(), torch.autograd.grad(combined.sum(), list(params.values()))):
                p.grad = g.contiguous()  # the fused Adam reads a gradient in its parameter's layout
        if self.cfg.grad_clip is not None:
            metrics[f"grad_norm/{name}"] = clip_member_grad_norms(list(params.values()), self.cfg.grad_clip)
        optimizer.step()
        if aggregator.needs_update:
            with torch.no_grad():
                new = batch_losses(params, *extra, *task_args)
                aggregator.update(new[0] if has_aux else new)
        weights = aggregator.task_weights
        if weights is not None:
            metrics[f"aggregator/{name}/weights"] = weights.detach()
        return losses.detach(), aux


@torch.no_grad()
def clip_member_grad_norms(params: list[Tensor], max_norm: float) -> Tensor:
    """Clip each member's gradient to global norm ``max_norm`` (``clip_grad_norm_``, per member).

    :param params: stacked parameters ``[N, ...]`` with ``.grad``.
    :return: ``[N]``, each member's norm before clipping.
    """
    norms = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad.flatten(1), dim=1)
                                                  for p in params], dim=1), dim=1)  # [N]
    scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for p in params:
        p.grad.mul_(scale.view(-1, *([1] * (p.ndim - 1))))
    return norms
