"""Meta-World's drawn goals are cached on disk, and envs built from the cache are the envs built afresh."""

import pickle

import metaworld
import numpy as np
import pytest

from mtrl_famo.benchmark_cache import CACHE_ENV, cache_file, cached_benchmark
from mtrl_famo.config import BenchmarkConfig
from mtrl_famo.envs import make_envs


def _tasks(bench) -> list[tuple[str, bytes]]:
    return [(task.env_name, task.data) for task in bench.train_tasks]


def _rollout(envs, steps: int = 20) -> np.ndarray:
    """Observations of a short rollout with a seeded random policy: ``[steps + 1, num_envs, obs_dim]``."""
    obs, _ = envs.reset(seed=0)
    rng = np.random.default_rng(0)
    seen = [obs]
    for _ in range(steps):
        obs, *_ = envs.step(rng.uniform(-1, 1, envs.action_space.shape).astype(np.float32))
        seen.append(obs)
    envs.close()
    return np.stack(seen)


def test_mt10_from_the_cache_is_the_fresh_draw(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(metaworld, "_N_GOALS", 5)  # 5 goals per task, not 50: a tenth of the draw's time
    cached = cached_benchmark(metaworld.MT10, seed=5)  # drawn, then written
    path = cache_file("MT10", (), 5)
    assert path.is_file() and path.parent.parent == tmp_path
    again = cached_benchmark(metaworld.MT10, seed=5)  # read back
    fresh = metaworld.MT10(seed=5)  # Meta-World's own draw
    assert _tasks(again) == _tasks(cached) == _tasks(fresh)
    assert len(fresh.train_tasks) == 50 and type(again) is metaworld.MT10


def test_envs_built_from_the_cache_step_like_fresh_ones(tmp_path, monkeypatch):
    cfg = BenchmarkConfig(name="mt1", env_name="push-v3", max_episode_steps=10)
    monkeypatch.setenv(CACHE_ENV, "off")
    fresh = _rollout(make_envs(cfg, seed=7))
    assert not any(tmp_path.iterdir())
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    first = _rollout(make_envs(cfg, seed=7))  # draws and writes the cache
    assert cache_file("MT1", ("push-v3",), 7).is_file()
    second = _rollout(make_envs(cfg, seed=7))  # reads it
    np.testing.assert_array_equal(first, fresh)
    np.testing.assert_array_equal(second, fresh)
    other = _rollout(make_envs(cfg, seed=8))  # another seed: other goals, another file
    assert cache_file("MT1", ("push-v3",), 8).is_file() and not np.array_equal(other[0], fresh[0])


def test_the_key_holds_the_goals_per_task(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(metaworld, "_N_GOALS", 3)
    three = cached_benchmark(metaworld.MT1, "reach-v3", seed=1)
    monkeypatch.setattr(metaworld, "_N_GOALS", 50)
    fifty = cached_benchmark(metaworld.MT1, "reach-v3", seed=1)
    assert (len(three.train_tasks), len(fifty.train_tasks)) == (3, 50)


@pytest.mark.parametrize("content", [b"", b"not a pickle", pickle.dumps({"a": "dict"})])
def test_a_torn_or_foreign_cache_file_is_drawn_again_and_replaced(tmp_path, monkeypatch, content):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    path = cache_file("MT1", ("reach-v3",), 2)
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    bench = cached_benchmark(metaworld.MT1, "reach-v3", seed=2)
    assert _tasks(bench) == _tasks(metaworld.MT1("reach-v3", seed=2))
    assert pickle.loads(path.read_bytes())["attributes"]["_train_tasks"] == bench.train_tasks


def test_a_cache_folder_that_cannot_be_written_is_skipped(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(CACHE_ENV, str(blocker / "cache"))
    bench = cached_benchmark(metaworld.MT1, "reach-v3", seed=2)
    assert len(bench.train_tasks) == 50 and blocker.read_text() == "not a folder"


def test_the_classes_are_restored_after_the_block(tmp_path, monkeypatch):
    from mtrl_famo.benchmark_cache import cached_benchmarks

    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    before = metaworld.MT10
    with pytest.raises(RuntimeError), cached_benchmarks():
        assert metaworld.MT10 is not before
        raise RuntimeError("a failing build")
    assert metaworld.MT10 is before
