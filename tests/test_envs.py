"""The Meta-World environment factory on the real benchmarks."""

import numpy as np
import pytest

from mtrl_famo.config import BenchmarkConfig, ConfigError
from mtrl_famo.envs import check_env_name, make_envs, task_names, true_next_obs

MT10_TASKS = {"reach-v3", "push-v3", "pick-place-v3", "door-open-v3", "drawer-open-v3", "drawer-close-v3",
              "button-press-topdown-v3", "peg-insert-side-v3", "window-open-v3", "window-close-v3"}


def test_mt10_one_env_per_task_with_one_hot_ids():
    envs = make_envs(BenchmarkConfig(name="mt10"), seed=0)
    try:
        assert envs.num_envs == 10
        assert set(task_names(envs)) == MT10_TASKS
        obs, _ = envs.reset(seed=0)
        assert obs.shape == (10, 39 + 10)
        np.testing.assert_array_equal(obs[:, -10:], np.eye(10))
        assert envs.single_action_space.shape == (4,)
    finally:
        envs.close()


def test_mt1_is_the_same_code_path_with_one_task():
    envs = make_envs(BenchmarkConfig(name="mt1", env_name="reach-v3"), seed=0)
    try:
        assert task_names(envs) == ["reach-v3"]
        obs, _ = envs.reset(seed=0)
        assert obs.shape == (1, 40) and obs[0, -1] == 1.0
    finally:
        envs.close()


def test_seeding_makes_rollouts_reproducible():
    rollouts = []
    for _ in range(2):
        envs = make_envs(BenchmarkConfig(name="mt1", env_name="push-v3"), seed=7)
        obs, _ = envs.reset(seed=7)
        for _ in range(5):
            obs, *_ = envs.step(envs.action_space.sample())
        rollouts.append(obs)
        envs.close()
    np.testing.assert_array_equal(rollouts[0], rollouts[1])


def test_time_limit_gives_truncation_and_true_final_observation():
    envs = make_envs(BenchmarkConfig(name="mt1", env_name="reach-v3", max_episode_steps=5), seed=0)
    try:
        envs.reset(seed=0)
        for t in range(5):
            next_obs, _, terminated, truncated, infos = envs.step(envs.action_space.sample())
        assert truncated.all() and not terminated.any()
        real = true_next_obs(next_obs, infos)
        # Same-step autoreset: step returned the reset observation, the real one is in final_obs.
        np.testing.assert_allclose(real[0], infos["final_obs"][0], rtol=1e-6)
        assert not np.allclose(real[0, :18], next_obs[0, :18])
        # Mid-episode, nothing is replaced.
        next_obs, _, _, _, infos = envs.step(envs.action_space.sample())
        assert true_next_obs(next_obs, infos) is next_obs
    finally:
        envs.close()


def test_unknown_env_name_lists_allowed_names():
    with pytest.raises(ConfigError, match=r"'reach-v9'.*allowed: .*reach-v3"):
        check_env_name("reach-v9")


def test_async_envs_pass_observations_through_shared_memory():
    import gymnasium as gym

    envs = make_envs(BenchmarkConfig(name="mt1", env_name="reach-v3", vector_strategy="async"), seed=0)
    try:
        assert isinstance(envs, gym.vector.AsyncVectorEnv) and envs.shared_memory
    finally:
        envs.close()
