"""How much memory a run will take, estimated from its config before anything is allocated.

An MT-SAC run holds, on its training device: the actor, the twin critic and its target
(float32 parameters), a gradient and two Adam moments for every trained parameter, the
preallocated replay buffer and, for a gradient aggregator, the ``[num_tasks, num_params]``
per-task gradients. ``check_memory`` refuses a run whose estimate exceeds what the device
has free, with one line naming the figure, instead of an out-of-memory traceback (or a
kill) after the run folder was made.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from mtrl_famo.config import TASKS_PER_BENCHMARK, Config, ConfigError

#: Meta-World v3's observation and action sizes (metaworld/sawyer_xyz_env.py: a 39-dim observation
#: before the task one-hot, a 4-dim action: xyz delta and gripper).
OBS_DIM, ACT_DIM = 39, 4
FLOAT_BYTES = 4


def mlp_params(in_dim: int, hidden_sizes: Sequence[int], out_dim: int, heads: int = 1) -> int:
    """Parameters of ``networks.mlp`` (``heads`` > 1: ``MultiHeadMLP``, one output layer per task)."""
    widths = [in_dim, *hidden_sizes]
    hidden = sum((a + 1) * b for a, b in zip(widths[:-1], widths[1:]))
    return hidden + (widths[-1] + 1) * out_dim * heads


@dataclass
class MemoryEstimate:
    """Bytes of one member's networks with their gradients and Adam moments, its replay buffer
    and its per-task gradients, times ``members``."""

    networks: int
    buffer: int
    task_gradients: int
    members: int

    @property
    def total(self) -> int:
        return self.members * (self.networks + self.buffer + self.task_gradients)


def estimate_memory(cfg: Config) -> MemoryEstimate:
    k = TASKS_PER_BENCHMARK[cfg.benchmark.name]
    obs = OBS_DIM + k  # the task one-hot is part of the observation
    heads = k if cfg.agent.multi_head else 1
    actor = mlp_params(obs, cfg.agent.hidden_sizes, 2 * ACT_DIM, heads)
    critic = 2 * mlp_params(obs + ACT_DIM, cfg.agent.hidden_sizes, 1, heads)
    # parameter + gradient + two Adam moments for the trained networks; the target critic's parameters only.
    networks = FLOAT_BYTES * (4 * actor + 4 * critic + critic)
    capacity = max(1, cfg.train.buffer_size // k)
    buffer = FLOAT_BYTES * k * capacity * (2 * obs + ACT_DIM + 2)
    from mtrl_famo.aggregators import AGGREGATORS

    task_gradients = 0
    if AGGREGATORS[cfg.aggregator.name].uses_task_gradients:
        sizes = {"critic": critic, "actor": actor, "alpha": k}  # the temperatures: k parameters at most
        task_gradients = FLOAT_BYTES * k * max(sizes[loss] for loss in cfg.aggregator.apply_to)
    members = len(cfg.seeds) if cfg.seeds else 1
    return MemoryEstimate(networks, buffer, task_gradients, members)


def available_bytes(device: str) -> tuple[int, str] | None:
    """Free memory of ``device`` (``cpu``, ``cuda``, ``cuda:N``; ``auto`` as the run resolves it) and its
    name; None where it cannot be read."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return free, f"free on {device}"
    try:  # Linux: what can be allocated without swapping, page cache included
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024, "of memory available"
    except OSError:
        pass
    return None


def _gb(n: int) -> str:
    return f"{n / 1e9:,.1f} GB"


def check_memory(cfg: Config) -> None:
    """:raises ConfigError: the run's estimated memory is more than its device has free."""
    free = available_bytes(cfg.device)
    if free is None:
        return
    est = estimate_memory(cfg)
    if est.total <= free[0]:
        return
    parts = [f"networks with gradients and Adam {_gb(est.networks)}", f"replay buffer {_gb(est.buffer)}"]
    if est.task_gradients:
        parts.append(f"per-task gradients {_gb(est.task_gradients)}")
    who = f" x {est.members} members" if est.members > 1 else ""
    raise ConfigError(
        f"agent.hidden_sizes={list(cfg.agent.hidden_sizes)} with train.buffer_size={cfg.train.buffer_size} needs "
        f"about {_gb(est.total)} ({', '.join(parts)}{who}), more than the {_gb(free[0])} {free[1]}; "
        f"choose smaller agent.hidden_sizes or train.buffer_size")
