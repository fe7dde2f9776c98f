"""Atomic checkpoint writes, and loading with one clear error for missing or corrupt files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mtrl_famo.atomic import atomic_write
from mtrl_famo.run_files import CHECKPOINT_FILE


class CheckpointError(RuntimeError):
    """A checkpoint is missing or cannot be read; the message names the file."""


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """``torch.save`` ``state`` to ``path`` atomically.

    :raises OSError: the file could not be written (a full disk); ``torch.save`` reports a failed
        write as a ``RuntimeError`` ("unexpected pos") chained from it: this raises the OSError.
    """
    try:
        atomic_write(path, lambda f: torch.save(state, f))
    except RuntimeError as exc:
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, OSError):
            raise cause from None
        raise


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


def load_error_line(exc: Exception) -> str:
    """The telling line of a ``load_state_dict`` error: the first size mismatch or missing key, not
    torch's "Error(s) in loading state_dict for Actor:" heading."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    telling = [ln for ln in lines if ln.startswith(("size mismatch", "Missing key", "Unexpected key"))]
    return (telling or lines or [type(exc).__name__])[0]
