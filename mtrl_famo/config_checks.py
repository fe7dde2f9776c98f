"""What types alone cannot check in a config: ranges, names and combinations (``validate``).

The schema itself (the dataclasses, their defaults and one-line docs) is ``config.py``; checks that need
Meta-World or OpenGL (task names, video tasks) live with the code that knows them, and
``runconfig.validate_run`` runs them after :func:`validate`.
"""

from __future__ import annotations

import math
from dataclasses import fields, is_dataclass
from typing import Any, Optional

from mtrl_famo.config import (
    AGGREGATED_LOSSES, AGGREGATOR_NAMES, ALIGNED_MTL_REDUCTIONS, ALIGNED_MTL_SCALE_MODES, ALPHA_LOSS_FORMS,
    ALPHA_LOSS_REDUCTIONS, BACKENDS, BENCHMARKS, COMPILE_MODES, CRITIC_LOSS_REDUCTIONS,
    CRITIC_ONLY_AGGREGATORS, Config, ConfigError, FAMO_SCALINGS, GRAPH_AGGREGATORS, INIT_SCHEMES, LOG_STD_MODES,
    MAX_FRAME_SIDE, MAX_SEED, MAX_TOTAL_STEPS, MAX_UPDATES_PER_STEP, METAWORLD_MAX_EPISODE_STEPS,
    METAWORLD_NUM_GOALS, NASH_MTL_MAX_NORM_MODES, NETWORK_NAMES, PCGRAD_ORDERS, PROTOCOLS,
    REWARD_NORMALIZATIONS, REWARD_VERSIONS, TASKS_PER_BENCHMARK, TASK_LOSS_WEIGHTS, VECTOR_STRATEGIES,
)


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _check_steps(value: Optional[int], key: str, allow_zero: bool = False) -> None:
    if value is None:
        return
    _require(isinstance(value, int) and not isinstance(value, bool),
             f"{key}={value!r} must be an integer")
    low = 0 if allow_zero else 1
    _require(value >= low, f"{key}={value} must be an integer >= {low}")


def _check_finite(node: Any, prefix: str = "") -> None:
    """Every float of the config is a finite number (``lr=inf`` or ``nan`` is refused)."""
    for f in fields(node):
        value = getattr(node, f.name)
        if is_dataclass(value):
            _check_finite(value, f"{prefix}{f.name}.")
        elif isinstance(value, float):
            _require(math.isfinite(value), f"{prefix}{f.name}={value} must be a finite number")


def validate(cfg: Config) -> Config:
    """Check ranges, names and combinations that types alone cannot; returns ``cfg``.

    Checks that need Meta-World or OpenGL (task names, video tasks) live with the code
    that knows them; ``runconfig.validate_run`` runs them after this.

    :raises ConfigError: naming the bad value and what is allowed.
    """
    b = cfg.benchmark
    _require(b.name in BENCHMARKS, f"benchmark={b.name!r} is unknown; allowed: {', '.join(BENCHMARKS)}")
    if b.name == "mt1":
        _require(b.env_name is not None, "benchmark=mt1 needs benchmark.env_name, e.g. benchmark.env_name=reach-v3")
    _require(b.vector_strategy in VECTOR_STRATEGIES,
             f"benchmark.vector_strategy={b.vector_strategy!r}; allowed: {', '.join(VECTOR_STRATEGIES)}")
    _check_steps(b.max_episode_steps, "benchmark.max_episode_steps")
    _require(b.max_episode_steps <= METAWORLD_MAX_EPISODE_STEPS,
             f"benchmark.max_episode_steps={b.max_episode_steps} is above Meta-World's episode limit; "
             f"allowed: 1 to {METAWORLD_MAX_EPISODE_STEPS}")
    _require(b.reward_version in REWARD_VERSIONS,
             f"benchmark.reward_version={b.reward_version!r}; allowed: {', '.join(REWARD_VERSIONS)}")
    _require(b.reward_normalization is None or b.reward_normalization in REWARD_NORMALIZATIONS,
             f"benchmark.reward_normalization={b.reward_normalization!r}; allowed: null, "
             f"{', '.join(REWARD_NORMALIZATIONS)}")
    _check_steps(b.num_goals, "benchmark.num_goals")
    _require(b.backend in BACKENDS, f"benchmark.backend={b.backend!r}; allowed: {', '.join(BACKENDS)}")
    _require(b.env_threads >= 0, f"benchmark.env_threads={b.env_threads}; allowed: 0 (all cores but one) or more")
    if b.backend == "envpool":
        # EnvPool draws every reset's goal from the task's whole range (metaworld_env.h SampleRandVec) and has
        # no reward wrappers: neither Meta-World setting can be honoured there.
        _require(b.num_goals == METAWORLD_NUM_GOALS,
                 f"benchmark.num_goals={b.num_goals} needs benchmark.backend=metaworld (EnvPool draws a new goal "
                 f"at every reset); allowed with backend=envpool: {METAWORLD_NUM_GOALS}")
        _require(b.reward_normalization is None,
                 f"benchmark.reward_normalization={b.reward_normalization!r} needs benchmark.backend=metaworld "
                 f"(Meta-World's reward wrappers); allowed with backend=envpool: null")
        _require(b.reward_version == "v2",
                 f"benchmark.reward_version={b.reward_version!r} needs benchmark.backend=metaworld (EnvPool has "
                 f"only the v3 tasks' own reward, Meta-World's v2 function); allowed with backend=envpool: v2")
    _require(b.num_goals <= METAWORLD_NUM_GOALS,
             f"benchmark.num_goals={b.num_goals}; allowed: 1 to {METAWORLD_NUM_GOALS} (Meta-World's goal variants)")

    _check_finite(cfg)
    a = cfg.aggregator
    _require(a.name in AGGREGATOR_NAMES, f"aggregator={a.name!r} is unknown; allowed: {', '.join(AGGREGATOR_NAMES)}")
    _require(len(a.apply_to) > 0, f"aggregator.apply_to=[] leaves {a.name} nothing to combine; allowed: a "
                                  f"non-empty list of {', '.join(AGGREGATED_LOSSES)}")
    for key, low, strict in (("c", 0.0, False), ("w_lr", 0.0, True), ("gamma", 0.0, False), ("eps", 0.0, True),
                             ("lr", 0.0, True), ("temperature", 0.0, True),
                             ("norm_eps", 0.0, False), ("reg_eps", 0.0, True), ("alpha", 0.0, True),
                             ("max_iters", 0, False), ("update_weights_every", 1, False), ("optim_niter", 1, False),
                             ("max_norm", 0.0, False)):
        if hasattr(a, key):
            value = getattr(a, key)
            _require(value > low if strict else value >= low,
                     f"aggregator.{key}={value} must be {'>' if strict else '>='} {low:g}")
    for key, allowed in (("scale_mode", ALIGNED_MTL_SCALE_MODES), ("order", PCGRAD_ORDERS),
                         ("reduction", ALIGNED_MTL_REDUCTIONS), ("max_norm_mode", NASH_MTL_MAX_NORM_MODES),
                         ("scaling", FAMO_SCALINGS)):
        if hasattr(a, key):
            _require(getattr(a, key) in allowed,
                     f"aggregator.{key}={getattr(a, key)!r}; allowed: {', '.join(allowed)}")
    for loss in a.apply_to:
        _require(loss in AGGREGATED_LOSSES,
                 f"aggregator.apply_to has {loss!r}; allowed: {', '.join(AGGREGATED_LOSSES)}")
    if hasattr(a, "window"):
        _check_steps(a.window, "aggregator.window")
    _require(not (a.name in CRITIC_ONLY_AGGREGATORS and "actor" in a.apply_to),
             f"aggregator.apply_to=[..., actor] is not allowed with aggregator={a.name}: "
             f"{CRITIC_ONLY_AGGREGATORS.get(a.name)}; allowed: [critic]")
    _require(not (a.name in CRITIC_ONLY_AGGREGATORS and "alpha" in a.apply_to),
             f"aggregator.apply_to=[..., alpha] is not allowed with aggregator={a.name}: the temperature loss "
             f"(alpha (-log pi - target entropy)) changes sign, as the actor's does ("
             f"{CRITIC_ONLY_AGGREGATORS.get(a.name)}); allowed: [critic]")

    ag = cfg.agent
    _require(len(ag.hidden_sizes) > 0 and all(h > 0 for h in ag.hidden_sizes),
             f"agent.hidden_sizes={list(ag.hidden_sizes)} must be a non-empty list of positive widths")
    for key in ("actor_lr", "critic_lr", "alpha_lr", "init_alpha"):
        _require(getattr(ag, key) > 0, f"agent.{key}={getattr(ag, key)} must be > 0")
    _require(0.0 <= ag.gamma <= 1.0, f"agent.gamma={ag.gamma} must be in [0, 1]")
    _require(0.0 < ag.tau <= 1.0, f"agent.tau={ag.tau} must be in (0, 1]")
    _require(ag.log_std_min < ag.log_std_max,
             f"agent.log_std_min={ag.log_std_min} must be below agent.log_std_max={ag.log_std_max}")
    _require(ag.log_std_mode in LOG_STD_MODES,
             f"agent.log_std_mode={ag.log_std_mode!r}; allowed: {', '.join(LOG_STD_MODES)}")
    _require(ag.init in INIT_SCHEMES, f"agent.init={ag.init!r}; allowed: {', '.join(INIT_SCHEMES)}")
    for key, allowed in (("critic_loss_reduction", CRITIC_LOSS_REDUCTIONS),
                         ("alpha_loss_reduction", ALPHA_LOSS_REDUCTIONS), ("alpha_loss_form", ALPHA_LOSS_FORMS),
                         ("task_loss_weights", TASK_LOSS_WEIGHTS)):
        _require(getattr(ag, key) in allowed, f"agent.{key}={getattr(ag, key)!r}; allowed: {', '.join(allowed)}")
    _require(not (ag.multi_head and not b.task_onehot),
             "agent.multi_head=true needs benchmark.task_onehot=true: each row's task one-hot picks its head; "
             "allowed: agent.multi_head=false, or benchmark.task_onehot=true")
    _require(ag.network in NETWORK_NAMES, f"agent.network={ag.network!r}; allowed: {', '.join(NETWORK_NAMES)}")
    if ag.network != "mlp":
        _require(b.task_onehot, f"agent.network={ag.network} needs benchmark.task_onehot=true: it takes the task "
                                f"one-hot apart from the observation; allowed: benchmark.task_onehot=true")
        _require(not ag.multi_head, f"agent.multi_head=true is for agent.network=mlp, not {ag.network} (MOORE has "
                                    f"its own task heads); allowed: agent.multi_head=false")
        _require(ag.init == "reference", f"agent.init={ag.init!r} with agent.network={ag.network}: it is built with "
                                         f"the Meta-World+ reference's initialisation; allowed: agent.init=reference")
        for key in ("encoder_width", "module_width", "routing_width"):
            _require(getattr(ag, key) > 0, f"agent.{key}={getattr(ag, key)} must be > 0")
        for key in ("embedding_dim", "num_modules", "module_layers", "num_parameter_sets"):
            _require(getattr(ag, key) is None or getattr(ag, key) > 0,
                     f"agent.{key}={getattr(ag, key)} must be > 0, or null for the reference's value")
        _require(ag.encoder_depth >= 0, f"agent.encoder_depth={ag.encoder_depth} must be >= 0")
        _require(ag.num_experts is None or ag.num_experts > 0,
                 f"agent.num_experts={ag.num_experts} must be > 0, or null for the reference's per-benchmark value")
        _require(math.isfinite(ag.encoder_temperature) and ag.encoder_temperature > 0,
                 f"agent.encoder_temperature={ag.encoder_temperature} must be > 0")
    _require(math.isfinite(ag.adam_eps) and ag.adam_eps > 0, f"agent.adam_eps={ag.adam_eps} must be > 0")
    for key in ("grad_clip", "max_q_value"):
        value = getattr(ag, key)
        _require(value is None or (math.isfinite(value) and value > 0),
                 f"agent.{key}={value} must be a number > 0, or null for off")

    p = cfg.protocol
    _require(p.name in PROTOCOLS, f"protocol.name={p.name!r}; allowed: {', '.join(PROTOCOLS)}")
    _require(p.famo_gamma >= 0, f"protocol.famo_gamma={p.famo_gamma} must be >= 0")
    _require(p.famo_scaling in FAMO_SCALINGS,
             f"protocol.famo_scaling={p.famo_scaling!r}; allowed: {', '.join(FAMO_SCALINGS)}")
    _require(p.pcgrad_order in PCGRAD_ORDERS,
             f"protocol.pcgrad_order={p.pcgrad_order!r}; allowed: {', '.join(PCGRAD_ORDERS)}")
    _require(len(p.gradient_apply_to) > 0 and all(loss in AGGREGATED_LOSSES for loss in p.gradient_apply_to),
             f"protocol.gradient_apply_to={list(p.gradient_apply_to)}; allowed: a non-empty list of "
             f"{', '.join(AGGREGATED_LOSSES)}")

    t = cfg.train
    _check_steps(t.total_steps, "train.total_steps")
    _check_steps(t.steps_per_task, "train.steps_per_task")
    _check_steps(t.warmup_steps, "train.warmup_steps", allow_zero=True)
    _check_steps(t.updates_per_step, "train.updates_per_step")
    _require(t.updates_per_step <= MAX_UPDATES_PER_STEP,
             f"train.updates_per_step={t.updates_per_step} is too many; allowed: 1 to {MAX_UPDATES_PER_STEP}")
    _check_steps(t.per_task_batch, "train.per_task_batch")
    _check_steps(t.buffer_size, "train.buffer_size")
    _check_steps(t.checkpoint_every, "train.checkpoint_every")
    _check_steps(t.log_every, "train.log_every")
    _check_steps(t.torch_threads, "train.torch_threads", allow_zero=True)
    _require(t.compile in COMPILE_MODES, f"train.compile={t.compile!r}; allowed: {', '.join(COMPILE_MODES)}")
    _require(t.compile != "graph" or cfg.aggregator.name in GRAPH_AGGREGATORS,
             f"train.compile=graph does not support aggregator={cfg.aggregator.name!r} (its solver is not written "
             f"for one graph); allowed: {', '.join(GRAPH_AGGREGATORS)}, or train.compile=none/task_gradients/all")
    k = TASKS_PER_BENCHMARK.get(b.name, 1)
    total, warmup = t.total_for(k), t.warmup_for(k)
    given = (f"train.total_steps={total}" if t.total_steps is not None
             else f"train.steps_per_task={t.steps_per_task} x {k} tasks = {total} steps")
    _require(total <= MAX_TOTAL_STEPS, f"{given} is too long a run; allowed: at most {MAX_TOTAL_STEPS:,} "
                                       f"environment steps (100x the 2M-steps-per-task MT50 protocol)")
    _require(warmup < total,
             f"train.warmup_steps={warmup}{f' (default 4000 x {k} tasks)' if t.warmup_steps is None else ''} is not "
             f"below train.total_steps={total}: the run would make no gradient update; lower train.warmup_steps "
             f"or raise train.total_steps")
    per_task = t.buffer_size // k
    _require(per_task >= b.max_episode_steps,
             f"train.buffer_size={t.buffer_size} holds {per_task} transitions per task, less than one episode "
             f"(benchmark.max_episode_steps={b.max_episode_steps}); allowed: >= {b.max_episode_steps * k}")
    _require(t.per_task_batch <= per_task,
             f"train.per_task_batch={t.per_task_batch} is more than the {per_task} transitions per task that "
             f"train.buffer_size={t.buffer_size} holds; allowed: <= {per_task}")

    e = cfg.eval
    _check_steps(e.every, "eval.every")
    _check_steps(e.episodes, "eval.episodes")
    _check_steps(e.final_episodes, "eval.final_episodes")

    for key in ("every", "episodes", "width", "height"):
        _check_steps(getattr(cfg.video, key), f"video.{key}")
    for key in ("width", "height"):
        _require(getattr(cfg.video, key) <= MAX_FRAME_SIDE,
                 f"video.{key}={getattr(cfg.video, key)} is too large a frame; allowed: 1 to {MAX_FRAME_SIDE} pixels")

    _check_steps(cfg.seed, "seed", allow_zero=True)
    _require(cfg.seed <= MAX_SEED, f"seed={cfg.seed} must be an integer in [0, {MAX_SEED}]")
    if cfg.seeds is not None:
        seeds = list(cfg.seeds)
        _require(len(seeds) > 0 and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)
                 and max(seeds) <= MAX_SEED and len(set(seeds)) == len(seeds),
                 f"seeds={seeds} must be a non-empty list of distinct integers in [0, {MAX_SEED}], e.g. seeds=[0,1,2]")
    _require(cfg.device == "auto" or cfg.device == "cpu" or cfg.device.startswith("cuda"),
             f"device={cfg.device!r}; allowed: auto, cpu, cuda, cuda:N")
    return cfg
