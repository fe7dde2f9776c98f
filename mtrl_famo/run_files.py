"""The names of the files in a run folder, shared by the code that writes and reads them."""

import re
from pathlib import Path

CONFIG_FILE = "config.yaml"  # the run's resolved config
CHECKPOINT_FILE = "checkpoint.pt"  # the latest checkpoint
EVALS_FILE = "evals.jsonl"  # one line per evaluation
RESULTS_FILE = "results.json"  # the final per-task table
LOCK_FILE = ".lock"  # held by the one train process writing the folder (run_lock.py)
TENSORBOARD_DIR = "tb"  # the TensorBoard event files


class CheckpointError(RuntimeError):
    """A checkpoint is missing or cannot be read; the message names the file.

    Defined here, beside the file names and without torch, so that the command line can catch it and
    still answer bad input before importing torch (seconds per call).
    """


def population_members(folder: Path) -> list[str]:
    """The members (``s<seed>`` folders holding a checkpoint) of a population's folder, in seed order."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    names = [p.name for p in folder.iterdir() if re.fullmatch(r"s\d+", p.name) and (p / CHECKPOINT_FILE).is_file()]
    return sorted(names, key=lambda name: int(name[1:]))
