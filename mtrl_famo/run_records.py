"""Reading a run folder's JSON records (``evals.jsonl``, ``results.json``) with one clear error for a
damaged file, naming the file, the line and how to recover."""

from __future__ import annotations

import json
from pathlib import Path

from mtrl_famo.config import ConfigError


class RunFileError(ConfigError):
    """A run's record file cannot be parsed; the message names the file and line (exit code 2)."""


def read_jsonl(path: Path) -> list[dict]:
    """The records of ``path``, one JSON object per non-empty line.

    :raises RunFileError: a line is not a JSON object (a truncated or edited file).
    """
    records = []
    for number, line in enumerate(Path(path).read_text(errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise RunFileError(f"{path} line {number} is not valid JSON ({exc}): the file is damaged") from None
        if not isinstance(record, dict) or "step" not in record:
            raise RunFileError(f"{path} line {number} is not an evaluation record (a JSON object with 'step')")
        records.append(record)
    return records


def read_json(path: Path) -> dict:
    """The JSON object in ``path``.

    :raises RunFileError: the file is not a JSON object.
    """
    try:
        data = json.loads(Path(path).read_text(errors="replace"))
    except ValueError as exc:
        raise RunFileError(f"{path} is not valid JSON ({exc}): the file is damaged") from None
    if not isinstance(data, dict):
        raise RunFileError(f"{path} is not a JSON object: the file is damaged")
    return data
