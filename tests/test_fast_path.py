"""The fast path trains exactly like the plain path, and its update makes no host sync.

Fast path: async envs stepping while the update runs, ``train.compile``, and the
deferred NaN/inf watch instead of a check (a device-to-host read) in every update.
"""

import pytest
import torch
from torch._dynamo.utils import counters
from torch.utils._python_dispatch import TorchDispatchMode

from conftest import TINY
from mtrl_famo.buffer import Batch
from mtrl_famo.config import AgentConfig, AggregatorConfig
from mtrl_famo.nonfinite import NonFiniteWatch
from mtrl_famo.runconfig import compose_config
from mtrl_famo.sac import MTSAC
from mtrl_famo.train import Trainer


def _train(run_dir, *overrides: str) -> Trainer:
    cfg = compose_config([*TINY, "benchmark=mt1", "benchmark.env_name=push-v3", "train.total_steps=200",
                          "train.warmup_steps=50", "eval.every=1000", f"run_dir={run_dir}", *overrides])
    trainer = Trainer(cfg, out=lambda *_: None)
    trainer.run()
    return trainer


def _assert_same_training(plain: Trainer, fast: Trainer, rtol: float, atol: float) -> None:
    assert fast.step == plain.step == 200
    torch.testing.assert_close(fast.buffer.storage, plain.buffer.storage, rtol=rtol, atol=atol)
    for name in ("actor", "critic", "critic_target"):
        for a, b in zip(getattr(plain.agent, name).parameters(), getattr(fast.agent, name).parameters()):
            torch.testing.assert_close(a, b, rtol=rtol, atol=atol)
    torch.testing.assert_close(plain.agent.log_alpha, fast.agent.log_alpha, rtol=rtol, atol=atol)


def test_async_envs_give_the_same_training_as_sync_envs(tmp_path):
    plain = _train(tmp_path / "sync", "benchmark.vector_strategy=sync")
    fast = _train(tmp_path / "async", "benchmark.vector_strategy=async")
    _assert_same_training(plain, fast, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("aggregator, mode", [("famo", "all"), ("pcgrad", "task_gradients")])
def test_compiled_update_gives_the_same_training_as_eager(tmp_path, aggregator, mode):
    plain = _train(tmp_path / "eager", f"aggregator={aggregator}", "train.compile=none")
    torch._dynamo.reset()  # forget graphs compiled by earlier tests, so the count below must grow
    graphs_before = counters["stats"]["unique_graphs"]
    fast = _train(tmp_path / "compiled", f"aggregator={aggregator}", f"train.compile={mode}")
    assert counters["stats"]["unique_graphs"] > graphs_before  # the update did run compiled code
    _assert_same_training(plain, fast, rtol=1e-4, atol=1e-5)


class ScalarReads(TorchDispatchMode):
    """Counts reads of a tensor's value into Python (``.item()``, ``bool(t)``, ``float(t)``): host syncs on a GPU."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            self.count += 1
        return func(*args, **(kwargs or {}))


def _update_scalar_reads(aggregator: str, immediate_checks: bool) -> int:
    k, b, obs_dim, act_dim = 3, 8, 12, 4
    agent = MTSAC(obs_dim, act_dim, k, AgentConfig(hidden_sizes=[16, 16]),
                  AggregatorConfig(name=aggregator, apply_to=["critic"]), immediate_checks=immediate_checks)
    watch = NonFiniteWatch(MTSAC.WATCHED_METRICS, ["a", "b", "c"], "cpu")
    batch = Batch(torch.randn(k, b, obs_dim), torch.rand(k, b, act_dim) * 2 - 1, torch.randn(k, b),
                  torch.randn(k, b, obs_dim), torch.zeros(k, b))
    agent.update(batch)  # optimizer state is created in the first step
    with ScalarReads() as reads:
        for step in range(3):
            watch.observe(agent.update(batch), step)
    watch.check()
    return reads.count


@pytest.mark.parametrize("aggregator", ["mean", "famo"])
def test_update_reads_nothing_back_from_the_device(aggregator):
    assert _update_scalar_reads(aggregator, immediate_checks=False) == 0
    assert _update_scalar_reads(aggregator, immediate_checks=True) > 0  # the counter does see the checks


def test_watch_reports_the_first_non_finite_step_and_its_tasks():
    watch = NonFiniteWatch(["losses/critic", "alpha"], ["reach", "push", "pick"], "cpu")
    watch.observe({"losses/critic": torch.ones(3), "alpha": torch.ones(3)}, step=10)
    watch.check()  # all finite: nothing to report
    watch.observe({"losses/critic": torch.tensor([1.0, float("nan"), float("inf")]), "alpha": torch.ones(3)}, 20)
    watch.observe({"losses/critic": torch.full((3,), float("nan")), "alpha": torch.full((3,), float("nan"))}, 30)
    with pytest.raises(FloatingPointError, match=r"non-finite losses/critic \(NaN or inf\) first at step 20 "
                                                 r"for tasks \['push', 'pick'\]"):
        watch.check()
