"""Atomic checkpoint and JSON writes, and loading with one clear error for missing or corrupt files."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from mtrl_famo.run_files import CHECKPOINT_FILE


class CheckpointError(RuntimeError):
    """A checkpoint is missing or cannot be read; the message names the file."""


def _atomic_write(path: Path, write) -> None:
    """Write through a temporary file in the same folder, fsync it, then rename over ``path``.

    A process killed at any moment leaves either the old file or the new one, never half of one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """``torch.save`` ``state`` to ``path`` atomically."""
    _atomic_write(path, lambda f: torch.save(state, f))


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON to ``path`` atomically."""
    write_text(path, json.dumps(data, indent=2) + "\n")


def write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    _atomic_write(path, lambda f: f.write(text.encode()))


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
