"""Process set-up shared by train, eval and video: the torch device, CPU threads and seeds."""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when present, else CPU.

    :raises ValueError: a CUDA device is asked for where CUDA is not available.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} but CUDA is not available here; use device=cpu or device=auto")
    return device


#: Up to this many cores, a CPU run takes 1 torch thread (measured fastest for these MLP sizes on 2 cores:
#: docs/performance.md); a sweep's worker applies the same rule to its share of the cores.
SMALL_MACHINE_CORES = 4


def configure_threads(requested: int, device: torch.device) -> None:
    """0 = one thread on small CPU machines (measured fastest for these MLP sizes), else torch's default."""
    if requested > 0:
        torch.set_num_threads(requested)
    elif device.type == "cpu" and (os.cpu_count() or 1) <= SMALL_MACHINE_CORES:
        torch.set_num_threads(1)


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
