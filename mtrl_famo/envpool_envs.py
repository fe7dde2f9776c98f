"""The training envs on EnvPool's native C++ Meta-World v3 (``benchmark.backend=envpool``).

EnvPool 1.2.5 (``sail-sg/envpool`` ``envpool/mujoco/metaworld/metaworld_env.h``, pinned by its
authors to Meta-World v3.0.0) steps each task in C++ on its own threads. One pool holds one task
(its ``task_name`` is a pool-wide setting), so the benchmark is one pool per task, each one env
and one worker thread; ``benchmark.env_threads`` pins those workers to that many cores.

:class:`EnvPoolTasks` gives the loop what the Meta-World vector env of :func:`mtrl_famo.envs.make_envs`
gives: env ``i`` is task ``i``; observations ``[num_tasks, 39 + num_tasks]`` float32 (EnvPool's 39,
clipped to Meta-World's observation bounds as Meta-World's ``step`` clips them, then the one-hot of
Meta-World's ``OneHotWrapper``); the goal shown (Meta-World's MT benchmarks set
``partially_observable=False``); rewards float64 (EnvPool's double ``unscaled_reward``; its ``reward``
is that value cast to float32); truncation at ``max_episode_steps``; Meta-World's info keys; and
gymnasium's same-step autoreset (EnvPool itself resets on the step after the last one), with
``final_obs``, ``final_info`` and the ``episode`` statistics of ``RecordEpisodeStatistics``.

What differs (docs/envpool.md): EnvPool draws a new goal and object placement from the task's
whole random range at every reset, where Meta-World's MT10/MT50 draw one of 50 fixed variations
per task; and a pool's C++ state (MuJoCo, its random generator) cannot be read or set, so a
checkpoint cannot hold the episodes in progress.
"""

from __future__ import annotations

import os
import time
import warnings

import gymnasium as gym
import numpy as np

from mtrl_famo.config import ConfigError

INSTALL = "pip install mtrl-famo[envpool]"
#: Meta-World 3's step info keys, all present in EnvPool's info too (``metaworld_env.h`` ``StateSpec``).
INFO_KEYS = ("success", "near_object", "grasp_success", "grasp_reward", "in_place_reward", "obj_to_target",
             "unscaled_reward")


def import_envpool():
    """EnvPool, or :class:`ConfigError` naming the install (the CLI exits 2 with it)."""
    try:
        import envpool  # noqa: F401
        import envpool.mujoco.metaworld.registration as registration
    except ImportError:
        raise ConfigError(f"benchmark.backend=envpool needs EnvPool, which is not installed: {INSTALL}") from None
    return registration


def resolve_env_threads(env_threads: int) -> int:
    """``benchmark.env_threads``, 0 resolved to the cores this process may use less one for the learner."""
    return env_threads or max(1, len(os.sched_getaffinity(0)) - 1)


def env_cpus(threads: int) -> list[int]:
    """The CPU ids the env workers are pinned to: the last ``threads`` this process may use (the learner,
    unpinned, finds the first one free), repeated when ``threads`` exceeds them."""
    allowed = sorted(os.sched_getaffinity(0))
    return [allowed[(len(allowed) - threads + i) % len(allowed)] for i in range(threads)]


def _metaworld_bounds(task: str) -> tuple[gym.spaces.Box, np.ndarray, np.ndarray]:
    """A fresh Meta-World env's observation space (what its vector env reports) and the bounds its
    ``step`` clips the fully observable observation to (``sawyer_observation_space``, the goal shown)."""
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS

    env = ALL_V3_ENVIRONMENTS[task]()
    space = env.observation_space
    env._partially_observable = False
    del env.sawyer_observation_space  # a cached_property: recomputed with the goal's bounds, as set_task does
    clip = env.sawyer_observation_space
    env.close()
    return space, clip.low, clip.high


class EnvPoolTasks(gym.vector.VectorEnv):
    """One EnvPool pool per task, stepped together as a gymnasium vector env with same-step autoreset.

    :param tasks: Meta-World task names (``reach-v3`` ...) in the benchmark's order.
    :param seed: seeds the pools (task ``i``'s: word ``i`` of ``SeedSequence(seed)``) and the action space.
    :param max_episode_steps: EnvPool's time limit (truncation).
    :param task_onehot: append the task one-hot (``benchmark.task_onehot``).
    :param env_threads: cores the workers are pinned to (0: all but one).
    """

    metadata = {"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP}
    #: :func:`mtrl_famo.envs.step_async` sends the actions and lets the workers step during the update.
    steps_in_background = True
    #: what :mod:`mtrl_famo.env_state` saves of it: the learner's side only (its C++ state is out of reach).
    backend = "envpool"

    def __init__(self, tasks: list[str], seed: int, max_episode_steps: int, task_onehot: bool = True,
                 env_threads: int = 0):
        self._registration = import_envpool()
        self.task_names = list(tasks)
        self.num_envs = k = len(tasks)
        self.max_episode_steps = max_episode_steps
        self.cpus = env_cpus(resolve_env_threads(env_threads))
        bounds = [_metaworld_bounds(t) for t in tasks]
        self._clip_low = np.stack([b[1] for b in bounds])  # [k, 39]
        self._clip_high = np.stack([b[2] for b in bounds])
        base = bounds[0][0]
        onehot = np.eye(k) if task_onehot else np.zeros((k, 0))
        self._onehot = onehot  # [k, k] float64, as Meta-World's OneHotWrapper (or [k, 0])
        # Meta-World's OneHotWrapper: Box(concat(low, 0), concat(high, 1)), float32 by Box's default.
        with warnings.catch_warnings():  # as make_envs: float64 bounds for a float32 space, as Meta-World's
            warnings.filterwarnings("ignore", message=".*precision lowered by casting.*")
            self.single_observation_space = gym.spaces.Box(np.concatenate([base.low, np.zeros(onehot.shape[1])]),
                                                           np.concatenate([base.high, np.ones(onehot.shape[1])]))
        self.single_action_space = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, k)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, k)
        self.action_space.seed(seed)
        self.pools: list = []
        self._build(seed)

    def _build(self, seed: int) -> None:
        """(Re)create the pools, task ``i``'s seeded with word ``i`` of ``SeedSequence(seed)`` (EnvPool fixes
        seeds at creation)."""
        import envpool

        self.close_pools()
        self.seed_ = seed
        seeds = np.random.SeedSequence(seed).generate_state(self.num_envs) >> 1  # EnvPool takes an int32
        self.pools = [envpool.make_gymnasium(self._registration.metaworld_task_id(task), num_envs=1, batch_size=1,
                                             num_threads=1, seed=int(s), max_episode_steps=self.max_episode_steps,
                                             partially_observable=False,
                                             thread_affinity_offset=self.cpus[i % len(self.cpus)])
                      for i, (task, s) in enumerate(zip(self.task_names, seeds))]
        self._returns = np.zeros(self.num_envs)
        self._lengths = np.zeros(self.num_envs, dtype=np.int64)
        self._starts = np.full(self.num_envs, time.perf_counter())

    # ------------------------------------------------------------------ gymnasium's vector API
    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        """Start new episodes in every env; a ``seed`` other than the pools' rebuilds them with it."""
        if seed is not None and seed != self.seed_:
            self._build(seed)
        for pool in self.pools:
            pool.async_reset()
        obs = np.stack([self._observation(i, pool.recv(reset=True)[0][0])
                        for i, pool in enumerate(self.pools)]).astype(np.float32)
        self._returns[:], self._lengths[:] = 0.0, 0
        self._starts[:] = time.perf_counter()
        return obs, {}

    def step_async(self, actions: np.ndarray) -> None:
        """Hand every task its ``[4]`` action; the workers step while the caller goes on."""
        actions = np.asarray(actions, dtype=np.float32)
        for i, pool in enumerate(self.pools):
            pool.send(actions[i:i + 1])

    def step_wait(self, **kwargs) -> tuple:
        """The step's ``(obs, rewards, terminated, truncated, infos)``, as gymnasium's ``SyncVectorEnv``
        with same-step autoreset gives them (finished envs: the reset observation, ``final_obs``/``final_info``)."""
        k = self.num_envs
        results = [pool.recv() for pool in self.pools]
        obs = np.empty((k, self.single_observation_space.shape[0]), dtype=np.float32)
        rewards = np.empty(k)
        terminated = np.zeros(k, dtype=bool)
        truncated = np.zeros(k, dtype=bool)
        infos: dict = {}
        step_infos, final = [], []  # final: [39 + k] float64 observations, as Meta-World's final_obs
        for i, (o, _, term, trunc, info) in enumerate(results):
            rewards[i] = info["unscaled_reward"][0]
            terminated[i], truncated[i] = bool(term[0]), bool(trunc[0])
            final.append(self._observation(i, o[0]))
            obs[i] = final[i]
            step_infos.append({key: float(info[key][0]) for key in INFO_KEYS})
        self._returns += rewards
        self._lengths += 1
        done = np.flatnonzero(terminated | truncated)
        for i in done:
            self.pools[i].async_reset()
        now = time.perf_counter()
        for i in range(k):
            info = step_infos[i]
            if i in done:
                info["episode"] = {"r": np.float64(self._returns[i]), "l": np.int64(self._lengths[i]),
                                   "t": round(now - self._starts[i], 6)}
                infos = self._add_info(infos, {"final_obs": final[i], "final_info": info}, i)
                obs[i] = self._observation(i, self.pools[i].recv(reset=True)[0][0])
                self._returns[i], self._lengths[i], self._starts[i] = 0.0, 0, now
                info = {}
            infos = self._add_info(infos, info, i)
        return obs, rewards, terminated, truncated, infos

    def step(self, actions: np.ndarray) -> tuple:
        self.step_async(actions)
        return self.step_wait()

    def _observation(self, i: int, raw: np.ndarray) -> np.ndarray:
        """EnvPool's ``[39]`` float64 observation of task ``i``, clipped as Meta-World's, with the one-hot:
        ``[39 + k]`` float64 (the vector observation rounds it to float32, as Meta-World's does)."""
        return np.concatenate([np.clip(raw, self._clip_low[i], self._clip_high[i]), self._onehot[i]])

    def close_pools(self) -> None:
        for pool in self.pools:
            pool.close()
        self.pools = []

    def close_extras(self, **kwargs) -> None:
        self.close_pools()
