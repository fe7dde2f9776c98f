"""Atomic checkpoint writes, and loading with one clear error for missing or corrupt files."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mtrl_famo.atomic import atomic_write
from mtrl_famo.run_files import CHECKPOINT_FILE, CheckpointError  # noqa: F401 (re-exported)


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


def rng_streams(action_space, agent_generator: torch.Generator) -> dict:
    """Every random stream of a run: Python's, NumPy's, torch's (and CUDA's) global ones, the warm-up's
    action space (a gymnasium space) and the agent's own generator, with the device it is on."""
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "numpy": np.random.get_state(),
        "python": random.getstate(),
        "action_space": action_space.np_random.bit_generator.state,
        "agent": agent_generator.get_state(),
        "agent_device": str(agent_generator.device),
    }


def load_rng_streams(rng: dict, action_space, agent_generator: torch.Generator, seed: int, step: int) -> str | None:
    """Put every stream of :func:`rng_streams` where it was; a stream saved on another kind of device (or
    on more GPUs than here) is re-seeded from the run's ``seed`` and ``step`` instead.

    :return: None, or the one line that says which streams were re-seeded.
    """
    torch.set_rng_state(rng["torch"])
    np.random.set_state(rng["numpy"])
    random.setstate(rng["python"])
    action_space.np_random.bit_generator.state = rng["action_space"]
    reseeded = []
    if torch.cuda.is_available():
        saved = rng["cuda"] or []
        if len(saved) >= torch.cuda.device_count():
            torch.cuda.set_rng_state_all(saved[:torch.cuda.device_count()])
        else:
            torch.cuda.manual_seed_all(derived_seed(seed, step, "cuda"))
            reseeded.append("torch's CUDA stream")
    here = agent_generator.device
    if "agent" in rng:
        agent_state, saved_device = rng["agent"], rng.get("agent_device")
    elif here.type == "cuda" and rng["cuda"]:  # checkpoints from before the agent had its own stream:
        agent_state, saved_device = rng["cuda"][here.index or 0], "cuda"  # it continued the global one
    else:
        agent_state, saved_device = rng["torch"], "cpu"
    if not restore_generator(agent_generator, agent_state, saved_device, seed, step, "agent"):
        reseeded.append(f"the agent's stream (saved on {saved_device or 'another device'})")
    if not reseeded:
        return None
    return (f"{' and '.join(reseeded)} cannot continue on {here}: re-seeded from seed={seed} and step {step:,} "
            f"(the run goes on, not bit for bit)")


def load_error_line(exc: Exception) -> str:
    """The telling line of a ``load_state_dict`` error: the first size mismatch or missing key, not
    torch's "Error(s) in loading state_dict for Actor:" heading."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    telling = [ln for ln in lines if ln.startswith(("size mismatch", "Missing key", "Unexpected key"))]
    return (telling or lines or [type(exc).__name__])[0]
