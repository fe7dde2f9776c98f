"""Shared fixtures: tiny real Meta-World runs through the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

# One inductor cache per xdist worker (inherited by the CLI runs it starts): two workers compiling the
# same kernel into one shared cache raced, and one loaded the other's half-written .so ("file too short").
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", os.path.join(
    tempfile.gettempdir(), f"torchinductor-mtrl-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}"))

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

# Small networks and budgets so a real MT10 run takes seconds on 2 cores.
TINY = [
    "device=cpu",
    "agent.hidden_sizes=[32,32]",
    "train.per_task_batch=8",
    "train.warmup_steps=200",
    "train.buffer_size=20000",
    "train.log_every=200",
    "train.progress=false",
    "eval.episodes=1",
    "eval.final_episodes=1",
    "benchmark.max_episode_steps=50",
]

# The reference tiny MT10 run (tiny_mt10_run); the report and video tests train beside it
# with these same arguments, and compare with it.
TINY_RUN = [*TINY, "train.total_steps=1000", "eval.every=500"]


def run_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``mtrl-famo ARGS`` in a fresh process (as a user would)."""
    return subprocess.run([sys.executable, "-m", "mtrl_famo.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def assert_usage_error(proc: subprocess.CompletedProcess, expected: str) -> None:
    """Bad input: exit code 2 and one line on stderr that contains ``expected``."""
    assert proc.returncode == 2, proc.stderr
    assert expected in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def last_task_weights(run_dir: Path, network: str, tasks: list[str]) -> list[float]:
    """The last logged ``aggregator/<network>/weights/<task>`` of every task, from the run's TensorBoard events."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tb"))
    acc.Reload()
    return [acc.Scalars(f"aggregator/{network}/weights/{task}")[-1].value for task in tasks]


@pytest.fixture(scope="session")
def tiny_mt10_run(tmp_path_factory) -> Path:
    """One finished tiny MT10 run (1000 steps, evaluations at 500 and at the end)."""
    run_dir = tmp_path_factory.mktemp("runs") / "mt10-mean"
    proc = run_cli("train", *TINY_RUN, f"run_dir={run_dir}")
    assert proc.returncode == 0, proc.stderr
    return run_dir
