"""Finding run folders and reading one into a :class:`Run` (config, evaluation log, final results)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import yaml

from mtrl_famo.report import ReportError
from mtrl_famo.run_files import CONFIG_FILE, EVALS_FILE, RESULTS_FILE
from mtrl_famo.saved_config import flat_keys
from mtrl_famo.run_records import RunFileError, read_json, read_jsonl


@dataclass
class Run:
    """One run folder: its identity, evaluation log and final (or latest) evaluation."""

    path: Path
    benchmark: str  # mt10, mt50, mt1-<task>
    aggregator: str
    seed: int
    tasks: list[str]
    evals: list[dict]  # evals.jsonl, in step order
    final: dict  # results.json when finished, else the latest evaluation
    finished: bool
    total_steps: int | None
    config: dict  # flattened config.yaml: {"benchmark.name": "mt10", ...}

    @property
    def step(self) -> int:
        return int(self.final["step"])

    @property
    def mean_success(self) -> float:
        return float(np.mean([self.final["success_rate"][t] for t in self.tasks]))


def find_run_dirs(paths: Sequence[str | Path]) -> list[Path]:
    """Run folders (holding ``config.yaml`` and ``evals.jsonl``) at or under each path, deduplicated.

    :raises ReportError: if a path does not exist or holds no run.
    """
    found: dict[Path, None] = {}
    for p in map(Path, paths):
        if not p.exists():
            raise ReportError(f"{str(p)!r} does not exist; give run folders written by `mtrl-famo train` "
                              f"or folders that contain them")
        if p.is_file():
            raise ReportError(f"{str(p)!r} is a file; give run folders or folders that contain them")
        # Every run folder, also those with no evaluation yet (build_report names them as left out);
        # not Hydra's own record of a sweep job (<job>/.hydra/config.yaml).
        here = sorted(c.parent for c in p.rglob(CONFIG_FILE) if ".hydra" not in c.relative_to(p).parts)
        if (p / CONFIG_FILE).is_file():
            here.insert(0, p)
        if not any((d / EVALS_FILE).is_file() for d in here):
            hint = " (a run there has not logged an evaluation yet)" if here else ""
            raise ReportError(f"no mtrl-famo run (a folder with {CONFIG_FILE} and {EVALS_FILE}) in "
                              f"{str(p)!r}{hint}")
        for run_dir in here:
            found.setdefault(run_dir.resolve(), None)
    return list(found)


def load_run(path: Path) -> Run | None:
    """Read one run folder; ``None`` when it has not logged an evaluation yet.

    :raises ReportError: if a file of the run cannot be parsed.
    """
    if not (path / EVALS_FILE).is_file():
        return None
    try:
        config = yaml.safe_load((path / CONFIG_FILE).read_text()) or {}
        evals = read_jsonl(path / EVALS_FILE)
        results_file = path / RESULTS_FILE
        results = read_json(results_file) if results_file.is_file() else None
    except RunFileError as exc:
        raise ReportError(str(exc)) from None
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise ReportError(f"cannot read the run in {str(path)!r}: {type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
    if not isinstance(config, dict):
        raise ReportError(f"{path / CONFIG_FILE} is not a mtrl-famo run config")
    if not evals:
        return None
    evals.sort(key=lambda e: e["step"])
    flat = flat_keys(config)
    bench = flat.get("benchmark.name", "?")
    if bench == "mt1":
        bench = f"mt1-{flat.get('benchmark.env_name')}"
    finished = bool(results and results.get("finished") and results["step"] == evals[-1]["step"])
    final = results if finished else evals[-1]
    tasks = list(results["tasks"]) if finished and "tasks" in results else list(evals[-1]["success_rate"])
    total = (results or {}).get("total_steps")
    if total is None:
        total = flat.get("train.total_steps") or (flat.get("train.steps_per_task", 0) * len(tasks)) or None
    return Run(path=path, benchmark=bench, aggregator=str(flat.get("aggregator.name", "?")),
               seed=int(flat.get("seed", 0)), tasks=tasks, evals=evals, final=final, finished=finished,
               total_steps=total, config=flat)

