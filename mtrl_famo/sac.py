"""Multi-task soft actor-critic: the agent (networks, temperatures, optimizers, aggregators).

The update itself is one function, :func:`mtrl_famo.update.update` (losses, aggregation,
Adam steps, target critic); :meth:`MTSAC.update` calls it on the agent's own tensors, and
``train.compile=graph`` compiles it (:mod:`~mtrl_famo.graph_update`). Every loss is
computed per task, as a ``[num_tasks]`` vector, from a batch whose rows are grouped by task
(:class:`~mtrl_famo.buffer.Batch`); an aggregator turns it into one update of its network:
loss-weighting aggregators (mean, FAMO, UW, DWA, RLW) weight the loss vector, gradient
aggregators (PCGrad, CAGrad, MGDA, IMTL-G, Aligned-MTL, UPGrad, DualProj, FairGrad,
Nash-MTL) combine the ``[num_tasks, num_params]`` per-task gradients, built with one
batched backward.
"""

from __future__ import annotations

import copy
import math
from typing import Callable

import numpy as np
import torch

from mtrl_famo.aggregators import make_aggregator
from mtrl_famo.aggregators.per_task_grads import per_task_gradients
from mtrl_famo.buffer import Batch
from mtrl_famo.config import AgentConfig, AggregatorConfig, aggregator_options
from mtrl_famo.graph_update import GraphUpdate
from mtrl_famo.networks import Actor, TwinQ, network_options
from mtrl_famo.optim import adam_tensors, fused_adam, load_fused_adam_state
from mtrl_famo.update import AdamHyper, UpdateSpec, actor_loss, critic_loss, make_draws, update

TaskLoss = Callable[..., torch.Tensor]


def critic_loss_fn(critic: TwinQ, max_q_value: float | None = None, reduction: str = "sum") -> TaskLoss:
    """``loss(params, obs, actions, target)``: :func:`mtrl_famo.update.critic_loss` for ``critic``.

    With task-grouped inputs (``obs [num_tasks, b, obs_dim]``, ``target [num_tasks, b]``) it
    returns the ``[num_tasks]`` loss vector; with one task's rows, that task's scalar loss.
    """
    return lambda params, obs, actions, target: critic_loss(critic, params, obs, actions, target, max_q_value,
                                                            reduction)


def actor_loss_fn(actor: Actor, critic: TwinQ) -> TaskLoss:
    """``loss(params, obs, noise, alpha) -> (loss, log_prob)``: :func:`mtrl_famo.update.actor_loss`
    with the critic module's own parameters as constants; ``alpha`` ``[num_tasks, 1]``."""
    return lambda params, obs, noise, alpha: actor_loss(actor, critic, params, dict(critic.named_parameters()),
                                                        obs, noise, alpha)


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
        nets = dict(num_tasks=num_tasks, multi_head=cfg.multi_head, init=cfg.init, network=cfg.network,
                    network_options=network_options(cfg, num_tasks))
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
        if "alpha" in aggregator_cfg.apply_to:  # otherwise the temperatures' rule of agent.alpha_loss_reduction
            self.aggregators["alpha"] = make_aggregator(aggregator_cfg.name, num_tasks=num_tasks, **options)
        for agg in self.aggregators.values():
            agg.to(self.device)
            agg.immediate_checks = immediate_checks
        if compile_mode in ("task_gradients", "all"):  # "all" compiled the whole-batch losses of the old update
            task_gradients = torch.compile(task_gradients)
        #: the update's static half (modules as templates, settings, aggregators); see mtrl_famo.update
        self.spec = UpdateSpec(self.actor, self.critic, cfg, self.target_entropy, self.aggregators,
                               {name: _adam_hyper(opt) for name, opt in self._optimizers().items()}, task_gradients)
        #: the agent's own random stream: actions, update noise, replay sampling (``Trainer``).
        self.generator = continue_global_stream(self.device)
        #: ``compile_mode="graph"``: the whole update as one compiled graph.
        self.graph_update = GraphUpdate(self) if compile_mode == "graph" else None

    def _optimizers(self) -> dict[str, torch.optim.Adam]:
        return {"critic": self.critic_opt, "actor": self.actor_opt, "alpha": self.alpha_opt}

    def update_state(self) -> dict:
        """The state tree of :func:`mtrl_famo.update.update`, made of this agent's own tensors.

        Built at every call: loading a checkpoint replaces the optimizers' state tensors.
        """
        adams = {name: adam_tensors(opt) for name, opt in self._optimizers().items()}
        return {
            "params": {"actor": dict(self.actor.named_parameters()), "critic": dict(self.critic.named_parameters()),
                       "critic_target": dict(self.critic_target.named_parameters()),
                       "alpha": {"log_alpha": self.log_alpha}},
            "adam": {name: {"exp_avg": a.exp_avg, "exp_avg_sq": a.exp_avg_sq, "step": a.steps}
                     for name, a in adams.items()},
            "aggregators": {name: agg.functional_state() for name, agg in self.aggregators.items()},
        }

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
        draws = make_draws(self.spec, (k, b, self.act_dim), self.generator, self.device)
        _, metrics = update(self.spec, self.update_state(), batch, draws, diagnostics)
        self.note_weights(metrics)
        return metrics

    def note_weights(self, metrics: dict[str, torch.Tensor]) -> None:
        """Give each aggregator the weights of the last update, for its ``task_weights`` and ``state_dict``."""
        for name, aggregator in self.aggregators.items():
            weights = metrics.get(f"aggregator/{name}/weights")
            if weights is not None:
                aggregator.note_weights(weights)

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


def _adam_hyper(optimizer: torch.optim.Adam) -> AdamHyper:
    group = optimizer.param_groups[0]
    return AdamHyper(float(group["lr"]), *map(float, group["betas"]), float(group["eps"]),
                     float(group["weight_decay"]))
