"""Atomic checkpoint writes, and loading with one clear error for missing or corrupt files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from mtrl_famo.atomic import atomic_write
from mtrl_famo.run_files import CHECKPOINT_FILE


class CheckpointError(RuntimeError):
    """A checkpoint is missing or cannot be read; the message names the file."""


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """``torch.save`` ``state`` to ``path`` atomically."""
    atomic_write(path, lambda f: torch.save(state, f))


def checkpoint_path(run_dir: Path) -> Path:
    return Path(run_dir) / CHECKPOINT_FILE


def load_checkpoint(path: Path, map_location: torch.device | str = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`.

    :raises CheckpointError: if the file is missing, truncated, or not a mtrl-famo checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        # Our own files hold RNG states (numpy arrays, python tuples), hence weights_only=False.
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # torch raises many types for a damaged file
        raise CheckpointError(f"checkpoint {path} is corrupt or unreadable ({type(exc).__name__}: {exc})") from exc
    if not isinstance(state, dict) or "agent" not in state or "step" not in state:
        raise CheckpointError(f"{path} is not a mtrl-famo checkpoint (missing 'agent'/'step')")
    return state


def derived_seed(seed: int, step: int, stream: str) -> int:
    """A seed for random stream ``stream`` from the run's seed and step (the same on every machine)."""
    words = np.random.SeedSequence([seed, step, *stream.encode()]).generate_state(2, dtype=np.uint32)
    return int(words[0]) << 32 | int(words[1])


def restore_generator(generator: torch.Generator, state: torch.Tensor, saved_device: str | None,
                      seed: int, step: int, stream: str) -> bool:
    """Continue ``generator`` from its saved ``state``; where that state comes from another kind of
    device (a CUDA Philox state cannot drive a CPU generator, nor the reverse), re-seed it with
    :func:`derived_seed` instead.

    :param saved_device: the device the state was saved on (``None`` in checkpoints older than this field).
    :return: whether the saved state was restored (False: re-seeded).
    """
    here = generator.device.type
    if saved_device is None or torch.device(saved_device).type == here:
        try:
            generator.set_state(state)
            return True
        except RuntimeError:  # an old checkpoint's state of another device type (its size tells)
            pass
    generator.manual_seed(derived_seed(seed, step, stream))
    return False
