"""The whole MT-SAC update as one compiled graph (``train.compile=graph``).

:meth:`MTSAC.update <mtrl_famo.sac.MTSAC.update>` is eager PyTorch: optimizer objects,
``autograd.grad``, ``requires_grad_`` toggles, each a break in a ``torch.compile``
graph (5 for ``mean``, 12 for FAMO, counted by ``scripts/graph_report.py``). Here the
same update (target, critic step, actor step, temperatures, target critic) is written
with functional pieces only, so that ``torch.compile(fullgraph=True)`` captures it
whole, and on CUDA replays it as a CUDA graph (``mode="reduce-overhead"``):

- gradients from ``torch.func``: the per-task ``[k, P]`` matrix of the gradient
  aggregators from ``per_task_gradients`` (``vmap`` of ``grad``), and for the
  loss-weighting ones one vector-Jacobian product of the ``[k]`` losses with the
  aggregator's ``loss_weights``;
- Adam steps through :func:`~mtrl_famo.optim.adam_step_` on the optimizers' own state
  tensors, so checkpoints are those of the eager update and a run may switch between
  the two on resume;
- the random numbers (the update's noise, PCGrad's projection orders) drawn before the
  graph, from the same generators and in the same order as the eager update: the two
  give the same results to float rounding (``tests/test_graph_update.py``).

Shapes are static (``dynamic=False``): one graph with diagnostics and one without, each
compiled once, at the first update that needs it.
"""

from __future__ import annotations

import functools
import itertools
import types
import warnings

import torch
from torch import Tensor

from mtrl_famo.aggregators.per_task_grads import gradient_diagnostic_tensors, per_task_gradients
from mtrl_famo.buffer import Batch
from mtrl_famo.optim import AdamTensors, adam_step_, adam_tensors

_INSTANCES = itertools.count()


class GraphUpdate:
    """``agent.update(batch, diagnostics)`` as one ``torch.compile`` graph per ``diagnostics`` value.

    :param agent: the :class:`~mtrl_famo.sac.MTSAC` whose networks, optimizers, temperatures and aggregators the
        update reads and writes in place; its aggregators must have the compiled form
        (``config.GRAPH_AGGREGATORS``), and their immediate checks are switched off (a
        check reads a flag back from the device; the training loop's
        :class:`~mtrl_famo.nonfinite.NonFiniteWatch` watches the metrics instead).
    :param backend: ``torch.compile``'s backend (tests use ``aot_eager``, which compiles faster).
    """

    def __init__(self, agent, backend="inductor"):
        self.agent = agent
        for aggregator in agent.aggregators.values():
            aggregator.immediate_checks = False
        # torch's own compiler code warns about its internal deprecations, once per compile, on the user's terminal.
        warnings.filterwarnings("ignore", message=".*torch._prims_common.check.*", category=FutureWarning)
        # CUDA graphs need an update with no host sync at all (not so for eigh-based aggregators).
        self.cuda_graphs = agent.device.type == "cuda" and all(a.cuda_graph_safe for a in agent.aggregators.values())
        mode = "reduce-overhead" if self.cuda_graphs and backend == "inductor" else None
        # torch.compile caches compiled code per code object, up to 8 entries (``recompile_limit``),
        # and every agent's update would be another entry of the one ``_update``: a process that
        # builds many agents (tests, benchmarks) would hit the limit. Each instance compiles a
        # copy with a code object of its own, holding its two graphs.
        code = GraphUpdate._update.__code__
        update = types.FunctionType(code.replace(co_name=f"{code.co_name}_{next(_INSTANCES)}"), globals(),
                                    argdefs=GraphUpdate._update.__defaults__)
        compiled = torch.compile(types.MethodType(update, self), fullgraph=True, dynamic=False, backend=backend,
                                 mode=mode)  # a bound method: a partial would be compiled through a shared wrapper
        self._compiled = {diagnostics: functools.partial(compiled, diagnostics=diagnostics)
                          for diagnostics in (False, True)}

    def __call__(self, batch: Batch, diagnostics: bool = False) -> dict[str, Tensor]:
        """One update; same arguments and metrics as :meth:`MTSAC.update`."""
        agent = self.agent
        k, b = batch.rewards.shape
        noise_shape = (k, b, agent.act_dim)
        # Drawn in the eager update's order: target noise, actor noise, then the aggregators' draws.
        next_noise = torch.randn(noise_shape, generator=agent.generator, device=agent.device)  # as sample_noise
        noise = torch.randn(noise_shape, generator=agent.generator, device=agent.device)
        drawn = {name: aggregator.graph_inputs(agent.device) for name, aggregator in agent.aggregators.items()}
        # Read at every call: loading a checkpoint replaces the optimizers' state tensors.
        adams = {name: adam_tensors(optimizer) for name, optimizer in
                 (("critic", agent.critic_opt), ("actor", agent.actor_opt), ("alpha", agent.alpha_opt))}
        if self.cuda_graphs:  # what the graph updates in place keeps its address between replays
            for adam in adams.values():
                for tensor in (*adam.params, *adam.exp_avg, *adam.exp_avg_sq, *adam.steps):
                    torch._dynamo.mark_static_address(tensor)
            for aggregator in agent.aggregators.values():
                for tensor in aggregator.graph_state():
                    torch._dynamo.mark_static_address(tensor)
        metrics = self._compiled[bool(diagnostics)](*batch, next_noise, noise, drawn["critic"], drawn["actor"],
                                                    adams)
        if self.cuda_graphs:  # a CUDA graph's outputs are overwritten by its next replay
            metrics = {key: value.clone() for key, value in metrics.items()}
        return metrics

    def _update(self, obs: Tensor, actions: Tensor, rewards: Tensor, next_obs: Tensor, terminated: Tensor,
                next_noise: Tensor, noise: Tensor, critic_inputs: tuple, actor_inputs: tuple,
                adams: dict[str, AdamTensors], diagnostics: bool = True) -> dict[str, Tensor]:
        """The update, with the batch fields ``[k, b, ...]``, noise ``[k, b, act_dim]``, the
        aggregators' draws and the three optimizers' tensors given."""
        agent, cfg = self.agent, self.agent.cfg
        k = rewards.shape[0]
        with torch.no_grad():  # gradients come from torch.func only
            alpha = agent.log_alpha.exp().expand(k)  # [k]
            next_action, next_log_prob = agent.actor.sample(next_obs, next_noise)
            q1_next, q2_next = agent.critic_target(next_obs, next_action)
            soft_value = torch.min(q1_next, q2_next) - alpha[:, None] * next_log_prob
            target = rewards + cfg.gamma * (1.0 - terminated) * soft_value  # [k, b]
            if cfg.max_q_value is not None:
                target = target.clamp(-cfg.max_q_value, cfg.max_q_value)

            metrics: dict[str, Tensor] = {}
            metrics["losses/critic"], _ = self._network_step(
                "critic", (obs, actions, target), critic_inputs, adams["critic"], diagnostics, metrics)
            metrics["losses/actor"], log_prob = self._network_step(
                "actor", (obs, noise, alpha[:, None]), actor_inputs, adams["actor"], diagnostics, metrics)

            (alpha_grad,), (_, alpha_losses) = torch.func.grad_and_value(self._alpha_loss, has_aux=True)(
                (agent.log_alpha.detach(),), log_prob)
            adam_step_(adams["alpha"], [alpha_grad])
            torch._foreach_lerp_(list(agent.critic_target.parameters()), list(agent.critic.parameters()), cfg.tau)
            metrics["losses/alpha"] = alpha_losses
            metrics["alpha"] = agent.log_alpha.exp().expand(k)
        return metrics

    def _alpha_loss(self, log_alpha: tuple[Tensor], log_prob: Tensor) -> tuple[Tensor, Tensor]:
        """The temperatures' loss (summed per-task losses, or their mean for a shared temperature) and
        the ``[k]`` losses; ``log_prob`` ``[k, b]`` from the actor step's forward."""
        k = log_prob.shape[0]
        losses = -(log_alpha[0].expand(k)[:, None] * (log_prob + self.agent.target_entropy)).mean(-1)  # [k]
        return (losses.mean() if self.agent.cfg.shared_alpha else losses.sum()), losses.detach()

    def _network_step(self, name: str, task_args: tuple, drawn: tuple, adam: AdamTensors, diagnostics: bool,
                      metrics: dict[str, Tensor]) -> tuple[Tensor, Tensor | None]:
        """One network's aggregated Adam step; :meth:`MTSAC._aggregated_step` in functional form.

        :return: the ``[k]`` losses before the step and the loss's auxiliary output (the
            actor's ``[k, b]`` log-probs; None for the critic).
        """
        agent = self.agent
        module = agent.critic if name == "critic" else agent.actor
        aggregator = agent.aggregators[name]
        task_loss, has_aux = agent._task_loss[name], agent._has_aux[name]
        params = {key: p.detach() for key, p in module.named_parameters()}
        aux = None
        if aggregator.uses_task_gradients or diagnostics:
            G, _, losses, *extra = per_task_gradients(module, task_loss, task_args, return_losses=True,
                                                      has_aux=has_aux)  # [k, P], [k]
            aux = extra[0] if has_aux else None
        if diagnostics:
            for key, value in gradient_diagnostic_tensors(G).items():
                metrics[f"aggregator/{name}/{key}"] = value
        if aggregator.uses_task_gradients:
            direction = aggregator.combine_with(G, *drawn)  # [P]
            grads = [piece.view_as(p) for piece, p in
                     zip(direction.split([p.numel() for p in params.values()]), params.values())]
        else:
            out = torch.func.vjp(lambda p: task_loss(p, *task_args), params, has_aux=has_aux)
            losses, pullback, aux = out if has_aux else (*out, None)  # [k]
            aggregator.combine_losses(losses)
            (grad_of,) = pullback(aggregator.loss_weights.to(losses.dtype))
            grads = [grad_of[key] for key in params]
        if agent.cfg.grad_clip is not None:
            norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
            grads = torch._foreach_mul(grads, (agent.cfg.grad_clip / (norm + 1e-6)).clamp(max=1.0))
            metrics[f"grad_norm/{name}"] = norm  # as clip_grad_norm_: the norm before clipping
        adam_step_(adam, grads)
        if aggregator.needs_update:  # FAMO learns its weights from the step's effect on the losses
            new_losses = task_loss({key: p.detach() for key, p in module.named_parameters()}, *task_args)
            aggregator.update(new_losses[0] if has_aux else new_losses)
        weights = aggregator.task_weights
        if weights is not None:
            metrics[f"aggregator/{name}/weights"] = weights.detach()
        return losses.detach(), aux
