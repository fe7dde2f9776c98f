"""Tables and plots across runs and seeds: ``mtrl-famo report RUN_DIR... [--out DIR]``.

Reads the run folders written by ``mtrl-famo train`` (``config.yaml``,
``evals.jsonl`` and, once a run has finished, ``results.json``), groups the runs
by (benchmark, aggregator) and reports, per group, the final evaluation:

- the mean success rate over tasks, averaged over seeds, with a 95% stratified
  percentile bootstrap confidence interval over seeds (runs are resampled with
  replacement independently for every task, as rliable's ``StratifiedBootstrap``
  does);
- the interquartile mean (IQM) of the seeds x tasks success scores, with the
  same bootstrap CI (Agarwal et al. 2021, "Deep RL at the Edge of the Statistical
  Precipice"; the statistic the Meta-World+ paper reports);
- the per-task success of each group.

A run without ``results.json`` (or whose evaluation log went on past it) is in
progress: it is reported at its latest evaluation and marked so. Runs of
different benchmarks are reported in separate sections and plot files.

Outputs in ``--out`` (default ``report/``): ``report.md``, ``summary.csv``,
``per_task.csv``, ``runs.csv`` and, per benchmark ``B``,
``learning_curves_B.png``, ``per_task_heatmap_B.png``, ``per_task_curves_B.png``.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import yaml
from scipy.stats import trim_mean

from mtrl_famo.atomic import atomic_write, write_text
from mtrl_famo.config import AGGREGATOR_NAMES, ConfigError
from mtrl_famo.run_files import CONFIG_FILE, EVALS_FILE, RESULTS_FILE

DEFAULT_OUT = "report"
CONFIDENCE = 0.95
TABLE_REPS = 10_000  # bootstrap replicates of the final-evaluation statistics
CURVE_REPS = 1_000  # per point of a learning curve
# Config keys that may differ between the seeds of one group without a note.
IGNORED_KEYS = ("seed", "run_dir", "device", "train.progress", "train.torch_threads", "train.compile",
                "train.log_every", "train.checkpoint_every", "benchmark.vector_strategy", "video.")


class ReportError(ConfigError):
    """Bad input to ``mtrl-famo report`` (no run found, mismatched runs in one group); exit code 2."""


# ---------------------------------------------------------------------------------------------- runs
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


def _flatten(node: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in node.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


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
        here = sorted(c.parent for c in p.rglob(CONFIG_FILE) if (c.parent / EVALS_FILE).is_file())
        if (p / CONFIG_FILE).is_file() and (p / EVALS_FILE).is_file():
            here.insert(0, p)
        if not here:
            started = (p / CONFIG_FILE).is_file() or any(p.rglob(CONFIG_FILE))
            hint = " (a run there has not logged an evaluation yet)" if started else ""
            raise ReportError(f"no mtrl-famo run (a folder with {CONFIG_FILE} and {EVALS_FILE}) in "
                              f"{str(p)!r}{hint}")
        for run_dir in here:
            found.setdefault(run_dir.resolve(), None)
    return list(found)


def load_run(path: Path) -> Run | None:
    """Read one run folder; ``None`` when it has not logged an evaluation yet.

    :raises ReportError: if a file of the run cannot be parsed.
    """
    try:
        config = yaml.safe_load((path / CONFIG_FILE).read_text()) or {}
        evals = [json.loads(line) for line in (path / EVALS_FILE).read_text().splitlines() if line.strip()]
        results_file = path / RESULTS_FILE
        results = json.loads(results_file.read_text()) if results_file.is_file() else None
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise ReportError(f"cannot read the run in {str(path)!r}: {type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
    if not evals:
        return None
    evals.sort(key=lambda e: e["step"])
    flat = _flatten(config)
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


def _aggregator_order(name: str) -> tuple:
    return (AGGREGATOR_NAMES.index(name) if name in AGGREGATOR_NAMES else len(AGGREGATOR_NAMES), name)


def group_runs(runs: list[Run]) -> dict[str, dict[str, list[Run]]]:
    """``{benchmark: {aggregator: [runs by seed]}}``, benchmarks and aggregators in a stable order.

    :raises ReportError: if the runs of one group evaluate different tasks or differ in a benchmark setting.
    """
    groups: dict[str, dict[str, list[Run]]] = {}
    for run in runs:
        groups.setdefault(run.benchmark, {}).setdefault(run.aggregator, []).append(run)
    for bench, by_agg in groups.items():
        for agg, members in by_agg.items():
            members.sort(key=lambda r: (r.seed, str(r.path)))
            first = members[0]
            for other in members[1:]:
                if other.tasks != first.tasks:
                    raise ReportError(
                        f"runs {str(first.path)!r} and {str(other.path)!r} are both {bench}/{agg} but evaluate "
                        f"different tasks ({len(first.tasks)} vs {len(other.tasks)}); report them separately")
                for key in sorted(set(first.config) | set(other.config)):
                    if key.startswith("benchmark.") and key != "benchmark.vector_strategy" \
                            and first.config.get(key) != other.config.get(key):
                        raise ReportError(
                            f"runs {str(first.path)!r} and {str(other.path)!r} are both {bench}/{agg} but have "
                            f"mismatched benchmarks ({key}={first.config.get(key)} vs {other.config.get(key)}); "
                            f"report them separately")
    return {b: dict(sorted(groups[b].items(), key=lambda kv: _aggregator_order(kv[0])))
            for b in sorted(groups, key=_benchmark_order)}


def _benchmark_order(bench: str) -> tuple:
    """MT10, MT50, then MT1 tasks alphabetically."""
    return ({"mt10": 0, "mt50": 1}.get(bench, 2), bench)


def config_differences(members: list[Run]) -> dict[str, list]:
    """Config keys (beyond seed, paths and logging) whose values differ between the runs of a group."""
    keys = sorted(set().union(*(r.config for r in members)))
    diffs = {}
    for key in keys:
        if key in IGNORED_KEYS or any(key.startswith(p) for p in IGNORED_KEYS if p.endswith(".")):
            continue
        values = [r.config.get(key) for r in members]
        if any(v != values[0] for v in values[1:]):
            diffs[key] = sorted({json.dumps(v) for v in values})
    return diffs


# ---------------------------------------------------------------------------------------------- statistics
def iqm(scores: np.ndarray, axis=None) -> np.ndarray | float:
    """Interquartile mean: the mean of the middle 50% of the scores (25% trimmed from each end)."""
    return trim_mean(scores, proportiontocut=0.25, axis=axis)


def stratified_bootstrap_ci(scores: np.ndarray, statistic: str, reps: int = TABLE_REPS,
                            confidence: float = CONFIDENCE, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of ``statistic`` over a ``[num_runs, num_tasks]`` score matrix.

    Each replicate resamples the runs with replacement independently for each task
    (stratified by task, as rliable's ``StratifiedBootstrap``). With one run there is
    nothing to resample: ``(nan, nan)``.

    :param statistic: ``"mean"`` (mean over runs and tasks) or ``"iqm"``.
    """
    n, k = scores.shape
    if n < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(reps, n, k))
    resampled = scores[idx, np.arange(k)]  # [reps, n, k]
    if statistic == "mean":
        stats = resampled.mean(axis=(1, 2))
    elif statistic == "iqm":
        stats = iqm(resampled.reshape(reps, n * k), axis=1)
    else:
        raise ValueError(f"statistic={statistic!r}; allowed: mean, iqm")
    alpha = (1 - confidence) / 2
    low, high = np.quantile(stats, [alpha, 1 - alpha])
    return float(low), float(high)


def bootstrap_ci_over_runs(values: np.ndarray, reps: int = CURVE_REPS, confidence: float = CONFIDENCE,
                           seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap CI of the mean over runs (axis 0, NaN = missing) for every other entry.

    :param values: ``[num_runs, ...]``; a column with fewer than 2 runs gets a NaN interval.
    :return: ``(low, high)``, each of shape ``values.shape[1:]``.
    """
    n = values.shape[0]
    if n < 2:
        nan = np.full(values.shape[1:], np.nan)
        return nan, nan.copy()
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(reps, n))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)  # columns with no run at all
        means = np.nanmean(values[idx], axis=1)  # [reps, ...]
        alpha = (1 - confidence) / 2
        low, high = np.nanquantile(means, [alpha, 1 - alpha], axis=0)
    too_few = (~np.isnan(values)).sum(axis=0) < 2
    low[too_few], high[too_few] = np.nan, np.nan
    return low, high


@dataclass
class GroupSummary:
    """The final-evaluation statistics of one (benchmark, aggregator) group."""

    benchmark: str
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

    @property
    def label(self) -> str:
        n = len(self.runs)
        return f"{self.aggregator} ({n} seed{'s' if n != 1 else ''})"

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


def summarize(benchmark: str, aggregator: str, members: list[Run]) -> GroupSummary:
    tasks = members[0].tasks
    scores = np.array([[r.final["success_rate"][t] for t in tasks] for r in members], dtype=float)
    returns = np.array([[r.final.get("episodic_return", {}).get(t, np.nan) for t in tasks] for r in members],
                       dtype=float)
    notes = []
    seeds = [r.seed for r in members]
    dup = sorted({s for s in seeds if seeds.count(s) > 1})
    if dup:
        notes.append(f"{benchmark}/{aggregator}: several runs share seed {', '.join(map(str, dup))}")
    for key, values in config_differences(members).items():
        notes.append(f"{benchmark}/{aggregator}: runs differ in {key} ({', '.join(values)})")
    return GroupSummary(
        benchmark=benchmark, aggregator=aggregator, runs=members, tasks=tasks, scores=scores, returns=returns,
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


# ---------------------------------------------------------------------------------------------- formatting
def fmt_steps(step: float) -> str:
    """Compact step counts: 500, 1.5k, 20k, 2M."""
    step = float(step)
    for unit, scale in (("M", 1e6), ("k", 1e3)):
        if abs(step) >= scale:
            return f"{step / scale:.3g}{unit}"
    return f"{step:.0f}"


def fmt_ci(value: float, ci: tuple[float, float]) -> str:
    if math.isnan(ci[0]):
        return f"{value:.2f}"
    return f"{value:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]"


def pretty_benchmark(bench: str) -> str:
    return f"MT1 {bench[4:]}" if bench.startswith("mt1-") else bench.upper()


def plot_names(bench: str) -> dict[str, str]:
    return {"learning_curves": f"learning_curves_{bench}.png", "per_task_heatmap": f"per_task_heatmap_{bench}.png",
            "per_task_curves": f"per_task_curves_{bench}.png"}


def _md_table(header: list[str], rows: list[list[str]], align: list[str]) -> list[str]:
    """A Markdown table padded to aligned columns (``align``: ``l`` or ``r`` per column)."""
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]

    def line(cells):
        return "| " + " | ".join(str(c).rjust(w) if a == "r" else str(c).ljust(w)
                                 for c, w, a in zip(cells, widths, align)) + " |"

    sep = "|" + "|".join("-" * (w + 1) + ":" if a == "r" else "-" * (w + 2) for w, a in zip(widths, align)) + "|"
    return [line(header), sep, *map(line, rows)]


def markdown(sections: dict[str, list[GroupSummary]], num_runs: int, skipped: list[Path],
             with_plots: bool = True) -> str:
    finished = sum(r.finished for s in sections.values() for g in s for r in g.runs)
    lines = ["# mtrl-famo report", "",
             f"{num_runs} run{'s' if num_runs != 1 else ''} ({finished} finished, {num_runs - finished} in "
             f"progress). Success rates are the final evaluation of each run (the latest one for runs in "
             f"progress), with the episodes per task each run logged. Mean: success averaged over tasks "
             f"and seeds; IQM: interquartile mean over seeds x tasks; [95% CI]: stratified percentile "
             f"bootstrap over seeds (shown from 2 seeds on)."]
    if skipped:
        lines += ["", f"Skipped (no evaluation logged yet): {', '.join(str(p) for p in skipped)}"]
    for bench, groups in sections.items():
        k = len(groups[0].tasks)
        lines += ["", f"## {pretty_benchmark(bench)} ({k} task{'s' if k != 1 else ''})", ""]
        rows = []
        for g in groups:
            lo, hi = g.steps
            rows.append([g.aggregator, str(len(g.runs)), fmt_steps(lo) if lo == hi else
                         f"{fmt_steps(lo)}-{fmt_steps(hi)}", g.episodes, fmt_ci(g.mean, g.mean_ci),
                         fmt_ci(g.iqm, g.iqm_ci), g.status])
        lines += _md_table(["aggregator", "seeds", "step", "episodes", "mean success [95% CI]", "IQM [95% CI]",
                            "status"], rows, ["l", "r", "r", "r", "l", "l", "l"])
        notes = [n for g in groups for n in g.notes]
        if notes:
            lines += [""] + [f"Note: {n}." for n in notes]
        lines += ["", "Per-task success (mean over seeds):", ""]
        task_rows = [[t] + [f"{g.scores[:, j].mean():.2f}" for g in groups] for j, t in enumerate(groups[0].tasks)]
        task_rows.append(["**mean**"] + [f"**{g.mean:.2f}**" for g in groups])
        lines += _md_table(["task"] + [g.aggregator for g in groups], task_rows, ["l"] + ["r"] * len(groups))
        if with_plots:
            names = plot_names(bench)
            lines += ["", f"![{pretty_benchmark(bench)} learning curves]({names['learning_curves']})",
                      f"![{pretty_benchmark(bench)} per-task success]({names['per_task_heatmap']})",
                      f"![{pretty_benchmark(bench)} per-task learning curves]({names['per_task_curves']})"]
    return "\n".join(lines) + "\n"


def _csv_text(header: list[str], rows: list[list]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def _num(x: float) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.6g}"


def summary_csv(sections: dict[str, list[GroupSummary]]) -> str:
    header = ["benchmark", "aggregator", "runs", "seeds", "finished_runs", "step_min", "step_max", "total_steps",
              "episodes", "mean_success", "mean_success_ci_low", "mean_success_ci_high", "iqm", "iqm_ci_low",
              "iqm_ci_high", "status"]
    rows = []
    for bench, groups in sections.items():
        for g in groups:
            totals = sorted({r.total_steps for r in g.runs if r.total_steps})
            rows.append([bench, g.aggregator, len(g.runs), " ".join(map(str, g.seeds)),
                         sum(r.finished for r in g.runs), *g.steps, " ".join(map(str, totals)), g.episodes,
                         _num(g.mean), _num(g.mean_ci[0]), _num(g.mean_ci[1]), _num(g.iqm), _num(g.iqm_ci[0]),
                         _num(g.iqm_ci[1]), g.status])
    return _csv_text(header, rows)


def per_task_csv(sections: dict[str, list[GroupSummary]]) -> str:
    header = ["benchmark", "aggregator", "task", "runs", "mean_success", "ci_low", "ci_high", "std_success",
              "mean_return"]
    rows = []
    for bench, groups in sections.items():
        for g in groups:
            for j, task in enumerate(g.tasks):
                col = g.scores[:, j]
                rows.append([bench, g.aggregator, task, len(col), _num(float(col.mean())),
                             _num(float(g.task_ci[0][j])), _num(float(g.task_ci[1][j])),
                             _num(float(col.std(ddof=1)) if len(col) > 1 else math.nan),
                             _num(float(np.nanmean(g.returns[:, j])) if not np.isnan(g.returns[:, j]).all()
                                  else math.nan)])
    return _csv_text(header, rows)


def runs_csv(sections: dict[str, list[GroupSummary]]) -> str:
    header = ["benchmark", "aggregator", "seed", "step", "total_steps", "finished", "episodes", "mean_success",
              "path"]
    rows = [[bench, g.aggregator, r.seed, r.step, r.total_steps or "", r.finished, r.final.get("episodes", ""),
             _num(r.mean_success), str(r.path)]
            for bench, groups in sections.items() for g in groups for r in g.runs]
    return _csv_text(header, rows)


# ---------------------------------------------------------------------------------------------- plots
def _colors(groups: list[GroupSummary]) -> dict[str, tuple]:
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    # A fixed colour per known aggregator, so plots of different reports agree.
    return {g.aggregator: cmap(_aggregator_order(g.aggregator)[0] if g.aggregator in AGGREGATOR_NAMES
                               else len(AGGREGATOR_NAMES) + i) for i, g in enumerate(groups)}


def _step_formatter():
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda x, _pos: fmt_steps(x))


def plot_learning_curves(bench: str, groups: list[GroupSummary]):
    import matplotlib.pyplot as plt

    colors = _colors(groups)
    fig, ax = plt.subplots(figsize=(7.5, 4.5), layout="constrained")
    k = len(groups[0].tasks)
    for g in groups:
        grid, success = curves(g.runs, g.tasks)  # [n, points, k]
        per_run = success.mean(axis=2)  # [n, points]; NaN beyond a run's last evaluation
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=RuntimeWarning)
            mean = np.nanmean(per_run, axis=0)
        low, high = np.full(len(grid), np.nan), np.full(len(grid), np.nan)
        for p in range(len(grid)):
            present = ~np.isnan(success[:, p, 0])
            low[p], high[p] = stratified_bootstrap_ci(success[present, p, :], "mean", reps=CURVE_REPS)
        marker = "o" if len(grid) <= 25 else None
        ax.plot(grid, mean, color=colors[g.aggregator], marker=marker, markersize=3.5, linewidth=1.8,
                label=g.label + ("" if g.finished else ", in progress"))
        if not np.isnan(low).all():
            ax.fill_between(grid, low, high, color=colors[g.aggregator], alpha=0.2, linewidth=0)
    ax.set_xlabel("environment steps (summed over tasks)")
    ax.set_ylabel(f"success rate (mean over {k} task{'s' if k != 1 else ''})")
    ax.set_title(f"{pretty_benchmark(bench)}: evaluation success, mean over seeds with 95% CI band")
    ax.set_ylim(-0.02, 1.02)
    ax.xaxis.set_major_formatter(_step_formatter())
    ax.grid(alpha=0.3)
    ax.legend(title="aggregator", loc="best", frameon=True)
    return fig


def plot_heatmap(bench: str, groups: list[GroupSummary]):
    import matplotlib.pyplot as plt

    tasks = groups[0].tasks
    rows = [[g.scores[:, j].mean() for g in groups] for j in range(len(tasks))]
    labels = list(tasks)
    if len(tasks) > 1:
        rows.append([g.mean for g in groups])
        labels.append("mean over tasks")
    values = np.array(rows)  # [tasks (+ mean), groups]
    width = max(5.0, 2.8 + 1.15 * len(groups))
    height = 1.6 + 0.3 * len(labels)
    fig, ax = plt.subplots(figsize=(width, height), layout="constrained")
    im = ax.imshow(values, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto", interpolation="nearest")
    ax.set_yticks(range(len(labels)), labels, fontsize=9)
    ax.set_xticks(range(len(groups)), [g.label for g in groups], fontsize=9,
                  rotation=30 if len(groups) > 3 else 0, ha="right" if len(groups) > 3 else "center")
    ax.xaxis.set_ticks_position("top")
    ax.xaxis.set_label_position("top")
    if len(tasks) > 1:
        ax.axhline(len(tasks) - 0.5, color="white", linewidth=3)
    ax.tick_params(length=0)
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            v = values[i, j]
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8,
                    color="black" if v > 0.6 else "white")
    fig.colorbar(im, ax=ax, label="success rate", shrink=min(1.0, 6 / height + 0.3), pad=0.02)
    steps = sorted({r.step for g in groups for r in g.runs})
    at = fmt_steps(steps[0]) if len(steps) == 1 else f"{fmt_steps(steps[0])}-{fmt_steps(steps[-1])}"
    ax.set_title(f"{pretty_benchmark(bench)}: per-task success at the final evaluation\n"
                 f"(mean over seeds, step {at})", fontsize=10)
    return fig


def plot_per_task_curves(bench: str, groups: list[GroupSummary]):
    import matplotlib.pyplot as plt

    colors = _colors(groups)
    tasks = groups[0].tasks
    ncols = min(5, len(tasks))
    nrows = math.ceil(len(tasks) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(max(7.5, 2.9 * ncols + 2.2), 2.1 * nrows + 1.3), sharex=True,
                             sharey=True, squeeze=False, layout="constrained")
    data = {g.aggregator: curves(g.runs, tasks) for g in groups}
    bands = {g.aggregator: bootstrap_ci_over_runs(data[g.aggregator][1]) for g in groups}
    for j, task in enumerate(tasks):
        ax = axes[j // ncols][j % ncols]
        for g in groups:
            grid, success = data[g.aggregator]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", category=RuntimeWarning)
                mean = np.nanmean(success[:, :, j], axis=0)
            ax.plot(grid, mean, color=colors[g.aggregator], linewidth=1.5, label=g.label)
            low, high = bands[g.aggregator][0][:, j], bands[g.aggregator][1][:, j]
            if not np.isnan(low).all():
                ax.fill_between(grid, low, high, color=colors[g.aggregator], alpha=0.2, linewidth=0)
        ax.set_title(task, fontsize=9)
        ax.set_ylim(-0.04, 1.04)
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_formatter(_step_formatter())
        ax.tick_params(labelsize=8)
    for j in range(len(tasks), nrows * ncols):
        axes[j // ncols][j % ncols].set_visible(False)
        axes[(j // ncols) - 1][j % ncols].xaxis.set_tick_params(labelbottom=True)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right upper", title="aggregator", fontsize=9)
    fig.supxlabel("environment steps (summed over tasks)", fontsize=10)
    fig.supylabel("success rate (mean over seeds, 95% CI)", fontsize=10)
    fig.suptitle(f"{pretty_benchmark(bench)}: per-task evaluation success", fontsize=11)
    return fig


# ---------------------------------------------------------------------------------------------- writing
def _save_figure(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    try:
        atomic_write(path, lambda f: fig.savefig(f, dpi=110, format="png"), readable=True)
    finally:
        plt.close(fig)


def build_report(paths: Sequence[str | Path]) -> tuple[dict[str, list[GroupSummary]], int, list[Path]]:
    """Find, read, group and summarize the runs: ``({benchmark: [group summaries]}, runs, skipped folders)``."""
    runs, skipped = [], []
    for run_dir in find_run_dirs(paths):
        run = load_run(run_dir)
        (runs.append(run) if run is not None else skipped.append(run_dir))
    if not runs:
        raise ReportError(f"no run with a logged evaluation in {', '.join(map(str, paths))} "
                          f"(runs that have not evaluated yet: {len(skipped)})")
    sections = {bench: [summarize(bench, agg, members) for agg, members in by_agg.items()]
                for bench, by_agg in group_runs(runs).items()}
    return sections, len(runs), skipped


def write_report(paths: Sequence[str | Path], out: str | Path = DEFAULT_OUT, plots: bool = True) -> str:
    """Write ``report.md``, the CSV tables and the plots into ``out``; return the Markdown."""
    import matplotlib

    matplotlib.use("Agg")
    sections, num_runs, skipped = build_report(paths)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ReportError(f"--out {str(out)!r} is a file; give a folder")
    out.mkdir(parents=True, exist_ok=True)
    text = markdown(sections, num_runs, skipped, with_plots=plots)
    if plots:
        for bench, groups in sections.items():
            names = plot_names(bench)
            _save_figure(plot_learning_curves(bench, groups), out / names["learning_curves"])
            _save_figure(plot_heatmap(bench, groups), out / names["per_task_heatmap"])
            _save_figure(plot_per_task_curves(bench, groups), out / names["per_task_curves"])
    write_text(out / "summary.csv", summary_csv(sections), readable=True)
    write_text(out / "per_task.csv", per_task_csv(sections), readable=True)
    write_text(out / "runs.csv", runs_csv(sections), readable=True)
    write_text(out / "report.md", text, readable=True)
    return text


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one line (raised) instead of usage + message."""

    def error(self, message: str):  # type: ignore[override]
        raise ReportError(f"{message} (usage: mtrl-famo report RUN_DIR... [--out DIR])")


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="mtrl-famo report",
                description="Tables and plots across runs and seeds, grouped by (benchmark, aggregator).")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                   help="run folders written by `mtrl-famo train`, or folders containing them (searched recursively)")
    p.add_argument("--out", default=DEFAULT_OUT, metavar="DIR",
                   help=f"output folder for report.md, CSV tables and PNG plots (default: {DEFAULT_OUT}/)")
    p.add_argument("--no-plots", action="store_true", help="write the tables only")
    return p


def main(argv: Sequence[str]) -> int:
    args = parser().parse_args(list(argv))
    text = write_report(args.run_dirs, args.out, plots=not args.no_plots)
    print(text, end="")
    print(f"\nreport written to {Path(args.out) / 'report.md'} (tables: summary.csv, per_task.csv, runs.csv"
          f"{'; plots: *.png' if not args.no_plots else ''})")
    return 0
