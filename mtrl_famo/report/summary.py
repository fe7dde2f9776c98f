"""The final-evaluation statistics of one group of runs (:class:`GroupSummary`) and its learning curves."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mtrl_famo.report.format import fmt_steps
from mtrl_famo.report.groups import config_differences, protocol_of
from mtrl_famo.report.runs import Run
from mtrl_famo.report.stats import TABLE_REPS, bootstrap_ci_over_runs, iqm, stratified_bootstrap_ci


@dataclass
class GroupSummary:
    """The final-evaluation statistics of one group: the seeds of one setting on one benchmark."""

    benchmark: str
    name: str  # the aggregator, and the values that set this group apart, e.g. "famo (agent.critic_lr=0.001)"
    aggregator: str
    runs: list[Run]
    tasks: list[str]
    scores: np.ndarray  # [num_runs, num_tasks] final success rates
    returns: np.ndarray  # [num_runs, num_tasks] final mean episodic returns
    mean: float
    mean_ci: tuple[float, float]
    iqm: float
    iqm_ci: tuple[float, float]
    task_ci: tuple[np.ndarray, np.ndarray]
    notes: list[str] = field(default_factory=list)
    short: str = ""  # the plots' label: the aggregator, or aggregator and letter (groups.short_labels)

    @property
    def label(self) -> str:
        """The group in plots: its short label and seeds, ``cagrad A (3 seeds)``."""
        n = len(self.runs)
        return f"{self.short or self.name} ({n} seed{'s' if n != 1 else ''})"

    @property
    def settings(self) -> str:
        """What sets this group apart from the others of its benchmark (``key=value, ...``), or empty."""
        return self.name[len(self.aggregator):].strip().removeprefix("(").removesuffix(")")

    @property
    def protocol(self) -> str:
        """The protocol preset of the group's runs (the same for all: it is part of the setting)."""
        return protocol_of(self.runs[0])

    @property
    def seeds(self) -> list[int]:
        return [r.seed for r in self.runs]

    @property
    def finished(self) -> bool:
        return all(r.finished for r in self.runs)

    @property
    def episodes(self) -> str:
        values = sorted({int(r.final.get("episodes", 0)) for r in self.runs})
        return str(values[0]) if len(values) == 1 else f"{values[0]}-{values[-1]}"

    @property
    def steps(self) -> tuple[int, int]:
        return min(r.step for r in self.runs), max(r.step for r in self.runs)

    @property
    def status(self) -> str:
        running = [r for r in self.runs if not r.finished]
        if not running:
            return "finished"
        at = sorted({r.step for r in running})
        where = f"step {fmt_steps(at[0])}" if len(at) == 1 else "steps " + ", ".join(fmt_steps(s) for s in at)
        return f"in progress: {len(running)} of {len(self.runs)} run{'s' if len(self.runs) != 1 else ''} at {where}"


def summarize(benchmark: str, name: str, members: list[Run]) -> GroupSummary:
    tasks = members[0].tasks
    scores = np.array([[r.final["success_rate"][t] for t in tasks] for r in members], dtype=float)
    returns = np.array([[r.final.get("episodic_return", {}).get(t, np.nan) for t in tasks] for r in members],
                       dtype=float)
    notes = []
    seeds = [r.seed for r in members]
    dup = sorted({s for s in seeds if seeds.count(s) > 1})
    if dup:
        notes.append(f"{benchmark}/{name}: several runs share seed {', '.join(map(str, dup))}")
    for key, values in config_differences(members).items():
        notes.append(f"{benchmark}/{name}: runs differ in {key} ({', '.join(values)})")
    return GroupSummary(
        benchmark=benchmark, name=name, aggregator=members[0].aggregator, runs=members, tasks=tasks, scores=scores, returns=returns,
        mean=float(scores.mean()), mean_ci=stratified_bootstrap_ci(scores, "mean"),
        iqm=float(iqm(scores, axis=None)), iqm_ci=stratified_bootstrap_ci(scores, "iqm"),
        task_ci=bootstrap_ci_over_runs(scores, reps=TABLE_REPS), notes=notes)


def curves(members: list[Run], tasks: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per-run, per-task success on the union of the runs' evaluation steps.

    A run's curve is linearly interpolated onto steps inside its own range (exact
    where the runs share an evaluation schedule) and NaN beyond its last evaluation.

    :return: ``(steps [num_points], success [num_runs, num_points, num_tasks])``.
    """
    grid = np.array(sorted({int(e["step"]) for r in members for e in r.evals}))
    out = np.full((len(members), len(grid), len(tasks)), np.nan)
    for i, run in enumerate(members):
        steps = np.array([e["step"] for e in run.evals], dtype=float)
        inside = (grid >= steps[0]) & (grid <= steps[-1])
        for j, task in enumerate(tasks):
            values = np.array([e["success_rate"][task] for e in run.evals], dtype=float)
            out[i, inside, j] = np.interp(grid[inside], steps, values)
    return grid, out

