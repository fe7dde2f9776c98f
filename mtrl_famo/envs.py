"""Meta-World benchmark factory: MT1 / MT10 / MT50 as gymnasium vector envs.

Environment ``i`` of the vector env is task ``i``: its observation ends in the
task's one-hot (Meta-World's ``OneHotWrapper``; ``benchmark.task_onehot=false`` leaves
it out), and the replay buffer keeps one partition per environment. Reward
normalisation and the number of goals per task are Meta-World's own options
(``reward_normalization_method``, ``num_goals``).
"""

from __future__ import annotations

import warnings
from functools import partial

import gymnasium as gym
import metaworld  # noqa: F401  (registers the Meta-World/* environments)
import numpy as np
from metaworld.env_dict import ALL_V3_ENVIRONMENTS

from mtrl_famo.benchmark_cache import cached_benchmarks
from mtrl_famo.config import BenchmarkConfig, ConfigError

_VECTOR_IDS = {"mt10": "Meta-World/MT10", "mt50": "Meta-World/MT50"}


def check_env_name(env_name: str) -> None:
    """:raises ConfigError: if ``env_name`` is not a Meta-World v3 task."""
    if env_name not in ALL_V3_ENVIRONMENTS:
        raise ConfigError(
            f"benchmark.env_name={env_name!r} is not a Meta-World v3 task; allowed: "
            + ", ".join(sorted(ALL_V3_ENVIRONMENTS))
        )


def benchmark_task_names(cfg: BenchmarkConfig) -> list[str]:
    """The benchmark's tasks in training order, known from the config alone (without building the envs)."""
    if cfg.name == "mt1":
        return [cfg.env_name]
    from metaworld.env_dict import MT10_V3, MT50_V3

    return list((MT10_V3 if cfg.name == "mt10" else MT50_V3).keys())


def make_envs(cfg: BenchmarkConfig, seed: int) -> gym.vector.VectorEnv:
    """One environment per task, one-hot task ids (unless ``task_onehot`` is off), same-step autoreset.

    ``async`` runs one worker process per task, the observations passing through
    shared memory (gymnasium's ``AsyncVectorEnv(shared_memory=True)``, which
    Meta-World's MT10/MT50 constructors use; checked here).

    :param cfg: benchmark config (name, env_name for mt1, vector strategy, episode length, task one-hot,
        reward version and normalisation, goals per task).
    :param seed: seeds the benchmark's goal positions, the envs and their action spaces.
    :return: a vector env with ``num_envs == num_tasks``; observations ``[num_tasks, obs_dim]``.
    """
    common = dict(
        seed=seed,
        use_one_hot=cfg.task_onehot,
        max_episode_steps=cfg.max_episode_steps,
        reward_function_version=cfg.reward_version,
        reward_normalization_method=cfg.reward_normalization,
    )
    with warnings.catch_warnings():
        # Meta-World declares float64 bounds for float32 spaces; gymnasium warns once per env.
        warnings.filterwarnings("ignore", message=".*precision lowered by casting.*")
        with cached_benchmarks():  # the goals drawn once per machine (benchmark_cache.py)
            envs = _make_vector_env(cfg, common)
    if envs.metadata.get("autoreset_mode") != gym.vector.AutoresetMode.SAME_STEP:
        raise RuntimeError(f"{cfg.name}: expected same-step autoreset, got {envs.metadata.get('autoreset_mode')}")
    if isinstance(envs, gym.vector.AsyncVectorEnv) and not envs.shared_memory:
        # The workers write observations into shared memory instead of pickling them through pipes.
        raise RuntimeError(f"{cfg.name}: expected async envs with shared memory")
    envs.action_space.seed(seed)
    return envs


def make_training_envs(cfg: BenchmarkConfig, seed: int) -> gym.vector.VectorEnv:
    """The envs the loop collects on: :func:`make_envs` (``benchmark.backend=metaworld``) or EnvPool's
    (``envpool``, :class:`~mtrl_famo.envpool_envs.EnvPoolTasks`), which give the loop the same arrays.
    Evaluation always builds :func:`make_envs`."""
    if cfg.backend != "envpool":
        return make_envs(cfg, seed)
    from mtrl_famo.envpool_envs import EnvPoolTasks

    if cfg.name == "mt1":
        check_env_name(cfg.env_name)
    return EnvPoolTasks(benchmark_task_names(cfg), seed, cfg.max_episode_steps, cfg.task_onehot, cfg.env_threads)


def _make_vector_env(cfg: BenchmarkConfig, common: dict) -> gym.vector.VectorEnv:
    if cfg.name == "mt1":
        check_env_name(cfg.env_name)
        set_num_goals(cfg.num_goals)
        # Meta-World registers MT1 as a single env; vectorise it like MT10/MT50 are.
        make_one = partial(metaworld.make_mt_envs, cfg.env_name, env_id=0, num_tasks=1, **common)
        vector_cls = gym.vector.SyncVectorEnv if cfg.vector_strategy == "sync" else gym.vector.AsyncVectorEnv
        options = {"shared_memory": True} if cfg.vector_strategy == "async" else {}
        return vector_cls([make_one], autoreset_mode=gym.vector.AutoresetMode.SAME_STEP, **options)
    # Always passed: Meta-World keeps it in a module global, so a value from an earlier call would stay.
    return gym.make_vec(_VECTOR_IDS[cfg.name], vector_strategy=cfg.vector_strategy, num_goals=cfg.num_goals, **common)


def set_num_goals(num_goals: int) -> None:
    """Meta-World's goals per task for the benchmarks built next in this process.

    ``gym.make_vec("Meta-World/MT10", num_goals=n)`` sets Meta-World's module global
    ``_N_GOALS`` (metaworld 3.1 ``__init__.py``, ``_mt_bench_vector_entry_point``); ``MT1``,
    built here through ``make_mt_envs``, has no such keyword, so it is set the same way.
    """
    metaworld._N_GOALS = num_goals


def task_names(envs: gym.vector.VectorEnv) -> list[str]:
    """Meta-World task names (``reach-v3`` ...) in environment order."""
    if hasattr(envs, "task_names"):  # EnvPool's training envs know them
        return list(envs.task_names)
    class_to_name = {cls.__name__: name for name, cls in ALL_V3_ENVIRONMENTS.items()}
    return [class_to_name[cls_name] for cls_name in envs.get_attr("task_name")]


def true_next_obs(next_obs: np.ndarray, infos: dict) -> np.ndarray:
    """Next observations with each finished episode's real final observation.

    Under gymnasium's same-step autoreset, ``step`` returns the *reset*
    observation for an environment whose episode just ended and puts the last
    real observation in ``infos["final_obs"]``; the replay transition needs the
    latter.

    :param next_obs: ``[num_envs, obs_dim]`` as returned by ``step``.
    :return: ``[num_envs, obs_dim]`` copy with final observations filled in.
    """
    if "final_obs" not in infos:
        return next_obs
    real = next_obs.copy()
    for i in np.flatnonzero(infos["_final_obs"]):
        real[i] = infos["final_obs"][i]
    return real


def step_async(envs: gym.vector.VectorEnv, actions: np.ndarray) -> np.ndarray | None:
    """Start a vector step: worker processes begin stepping now for ``AsyncVectorEnv``.

    :return: the actions still to be applied by :func:`step_wait` (sync envs), else None.
    """
    if isinstance(envs, gym.vector.AsyncVectorEnv) or getattr(envs, "steps_in_background", False):  # EnvPool
        envs.step_async(actions)
        return None
    return actions


def step_wait(envs: gym.vector.VectorEnv, pending: np.ndarray | None) -> tuple:
    """Finish the step started by :func:`step_async`; returns what ``envs.step`` returns."""
    return envs.step_wait() if pending is None else envs.step(pending)
