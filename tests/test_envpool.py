"""``benchmark.backend=envpool`` (issue 25) on real envs: EnvPool's training envs give the loop the arrays
Meta-World's give; a CLI training on them, stopped by a real SIGTERM and resumed, keeps every tensor of the
learner and evaluates on Meta-World's own envs; without EnvPool, one line naming the install."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from conftest import TINY, assert_usage_error
from mtrl_famo.config import BenchmarkConfig, Config, ConfigError
from mtrl_famo.config_checks import validate
from mtrl_famo.envs import task_names

pytest.importorskip("envpool")

def structure(value):
    """The dtypes, shapes and keys of what a vector env returns, recursively."""
    if isinstance(value, dict):
        return {key: structure(v) for key, v in value.items()}
    if isinstance(value, np.ndarray):
        return (value.dtype.str, value.shape, structure(value[0]) if value.dtype == object else None)
    return type(value).__name__


def assert_same_arrays(metaworld, envpool, episode: int) -> None:
    """Both vector envs, reset and stepped with the same random actions into a second episode, give the loop
    the same arrays: dtypes, shapes, info keys, one-hot, truncation, success flags, final observations."""
    assert envpool.single_observation_space == metaworld.single_observation_space  # bounds, float32
    assert envpool.action_space == metaworld.action_space
    assert task_names(envpool) == task_names(metaworld)
    assert envpool.metadata["autoreset_mode"] == metaworld.metadata["autoreset_mode"]
    k = envpool.num_envs
    actions = np.random.default_rng(0).uniform(-1, 1, (episode + 1, k, 4)).astype(np.float32)
    runs = [[envs.reset(seed=3)] + [envs.step(a) for a in actions] for envs in (metaworld, envpool)]
    for t, (a, b) in enumerate(zip(*runs)):
        assert structure(b) == structure(a), f"step {t}"  # obs float32 [k, 39 + k], rewards float64, info keys
    for steps in runs:
        for t, (obs, *rest) in enumerate(steps):
            np.testing.assert_array_equal(obs[:, 39:], np.eye(k))  # one-hot appended, env i = task i
            if t == 0 or t == episode:  # a new episode: its previous frame is its first
                np.testing.assert_array_equal(obs[:, :18], obs[:, 18:36])
            if t == 0:
                continue
            rewards, terminated, truncated, infos = rest
            assert not terminated.any() and truncated.all() == (t == episode) and truncated.any() == (t == episode)
            if t < episode:
                assert infos["_success"].all() and set(np.unique(infos["success"])) <= {0.0, 1.0}
        # The goal is shown (Meta-World's MT benchmarks are fully observable) and each episode draws its own.
        goals = [steps[t][0][:, 36:39] for t in (1, episode)]
        assert (np.abs(goals[0] - goals[1]).max(1) > 1e-3).sum() >= k // 2
        final = steps[episode][4]
        assert final["_final_obs"].all()
        for i in range(k):  # the true last observation: its previous frame is the step before's
            np.testing.assert_allclose(final["final_obs"][i][18:36], steps[episode - 1][0][i, :18], rtol=1e-6)
            assert not np.allclose(final["final_obs"][i][:18], steps[episode][0][i, :18])
        np.testing.assert_allclose(final["final_info"]["episode"]["r"], sum(s[1] for s in steps[1:episode + 1]))
        np.testing.assert_array_equal(final["final_info"]["episode"]["l"], episode)
        assert set(np.unique(final["final_info"]["success"])) <= {0.0, 1.0}


def test_envpool_refuses_settings_it_cannot_honour_in_one_line():
    for benchmark, key in ((BenchmarkConfig(backend="envpool", num_goals=1), "benchmark.num_goals=1"),
                           (BenchmarkConfig(backend="envpool", reward_normalization="exponential"),
                            "benchmark.reward_normalization='exponential'"),
                           (BenchmarkConfig(backend="envpool", reward_version="v1"), "benchmark.reward_version='v1'"),
                           (BenchmarkConfig(backend="gym"), "benchmark.backend='gym'"),
                           (BenchmarkConfig(env_threads=-1), "benchmark.env_threads=-1")):
        with pytest.raises(ConfigError, match=key):
            validate(Config(benchmark=benchmark))


def test_without_envpool_the_cli_names_the_install(tmp_path):
    import subprocess

    blocked = ("import sys; sys.modules['envpool'] = None; from mtrl_famo import cli; "
               "sys.exit(cli.main(sys.argv[1:]))")
    proc = subprocess.run([sys.executable, "-c", blocked, "train", "benchmark.backend=envpool",
                           f"run_dir={tmp_path / 'run'}"], capture_output=True, text=True, timeout=300)
    assert_usage_error(proc, "pip install mtrl-famo[envpool]")
    assert not (tmp_path / "run").exists()


def test_a_cli_run_on_envpool_gives_the_loop_metaworlds_arrays_resumes_and_evaluates_on_metaworld(tmp_path):
    """One CLI training on EnvPool (MT10), stopped by a real SIGTERM mid-episode, then checked in process:

    - the resume restores every tensor of the learner and every Python-side random stream (a checkpoint
      written right after loading is the loaded one, the envs' entry aside) and starts new episodes on EnvPool;
    - its EnvPool training envs and its Meta-World evaluation envs (built as backend=metaworld builds its
      training envs) give the loop the same arrays (:func:`assert_same_arrays`, over one 50-step episode);
    - the resumed run finishes, its evaluation on Meta-World's own envs.
    """
    import gymnasium as gym
    from metaworld.sawyer_xyz_env import SawyerXYZEnv
    from test_resume import assert_same_state, stopped_run

    from mtrl_famo.envpool_envs import EnvPoolTasks
    from mtrl_famo.saved_config import load_saved_config
    from mtrl_famo.train import Trainer, load_resume_state

    run_dir = tmp_path / "run"
    run = [*TINY, "benchmark.backend=envpool", "train.total_steps=400", "eval.every=100000", f"run_dir={run_dir}"]
    proc = stopped_run("sigterm", 25, *run)  # 25 vector steps: mid-episode, after the warm-up
    assert proc.returncode == 128 + 15, proc.stderr
    cfg = load_saved_config(run_dir)
    cfg.run_dir = str(run_dir)
    state = load_resume_state(cfg)
    assert state["step"] == 250 and state["envs"]["train"]["envpool"]["next_seed"] != cfg.seed
    lines: list[str] = []
    trainer = Trainer(cfg, out=lines.append)
    assert isinstance(trainer.envs, EnvPoolTasks)
    assert isinstance(trainer.eval_envs, gym.vector.SyncVectorEnv)
    assert all(isinstance(e.unwrapped, SawyerXYZEnv) for e in trainer.eval_envs.envs)  # Meta-World's own
    trainer.load_state_dict(state)
    resumed = trainer.state_dict()
    assert_same_state({k: v for k, v in state.items() if k != "envs"}, {k: v for k, v in resumed.items() if k != "envs"})
    assert trainer.resume_notes == ["EnvPool's training envs cannot save the episodes in progress (their state is "
                                    "in C++): they start new episodes, their pools seeded anew from the checkpoint's "
                                    "step"]
    assert trainer.envs.seed_ == state["envs"]["train"]["envpool"]["next_seed"]
    np.testing.assert_array_equal(trainer.obs[:, :18], trainer.obs[:, 18:36])  # new episodes

    assert_same_arrays(trainer.eval_envs, trainer.envs, cfg.benchmark.max_episode_steps)

    trainer.resume_notes = []
    results = trainer.run(resume=True, state=state)  # puts the envs back where the checkpoint has them
    assert results["step"] == 400 and results["finished"] and results["episodes"] == 1
    assert set(results["success_rate"]) == set(task_names(trainer.eval_envs))
    assert any("start new episodes" in line for line in lines)
