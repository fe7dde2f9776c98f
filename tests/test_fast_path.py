"""The fast path (async envs stepping while the update runs) trains exactly like the plain path."""

import torch

from conftest import TINY
from mtrl_famo.runconfig import compose_config
from mtrl_famo.train import Trainer


def _train(tmp_path, strategy: str) -> Trainer:
    cfg = compose_config([*TINY, "benchmark=mt1", "benchmark.env_name=push-v3", f"benchmark.vector_strategy={strategy}",
                          "train.total_steps=200", "train.warmup_steps=50", "eval.every=1000",
                          f"run_dir={tmp_path / strategy}"])
    trainer = Trainer(cfg, out=lambda *_: None)
    trainer.run()
    return trainer


def test_async_envs_give_the_same_training_as_sync_envs(tmp_path):
    plain, fast = _train(tmp_path, "sync"), _train(tmp_path, "async")
    assert fast.step == plain.step == 200
    torch.testing.assert_close(fast.buffer.storage, plain.buffer.storage)
    for name in ("actor", "critic", "critic_target"):
        for a, b in zip(getattr(plain.agent, name).parameters(), getattr(fast.agent, name).parameters()):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(plain.agent.log_alpha, fast.agent.log_alpha)
