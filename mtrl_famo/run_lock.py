"""One ``train`` process per run folder: an advisory lock on ``run_dir/.lock``, held until the process exits.

The operating system releases the lock when the process ends in any way (even
``kill -9``), so a stale lock file never blocks a later run.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from mtrl_famo.config import ConfigError
from mtrl_famo.run_files import LOCK_FILE

_held: dict[Path, int] = {}  # run folder -> open file descriptor of its lock


def lock_run_dir(run_dir: Path) -> None:
    """Create ``run_dir`` if needed and take its lock for the rest of this process.

    :raises ConfigError: another process holds the lock (naming it, when it wrote its pid).
    """
    run_dir = Path(run_dir).resolve()
    if run_dir in _held:
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip()
        os.close(fd)
        raise ConfigError(f"run_dir={str(run_dir)!r} is in use by another mtrl-famo train"
                          f"{f' (pid {holder})' if holder else ''}; wait for it to end or choose another run_dir"
                          ) from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    _held[run_dir] = fd


def unlock_run_dir(run_dir: Path) -> None:
    """Release the lock taken by :func:`lock_run_dir` (a sweep's next job may use the folder)."""
    fd = _held.pop(Path(run_dir).resolve(), None)
    if fd is not None:
        os.close(fd)
