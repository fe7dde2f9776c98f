"""The report's text output: the Markdown report and the CSV tables."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np

from mtrl_famo.report.format import fmt_ci, fmt_steps, plot_names, pretty_benchmark
from mtrl_famo.report.summary import GroupSummary


def _md_table(header: list[str], rows: list[list[str]], align: list[str]) -> list[str]:
    """A Markdown table padded to aligned columns (``align``: ``l`` or ``r`` per column)."""
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]

    def line(cells):
        return "| " + " | ".join(str(c).rjust(w) if a == "r" else str(c).ljust(w)
                                 for c, w, a in zip(cells, widths, align)) + " |"

    sep = "|" + "|".join("-" * (w + 1) + ":" if a == "r" else "-" * (w + 2) for w, a in zip(widths, align)) + "|"
    return [line(header), sep, *map(line, rows)]


def markdown(sections: dict[str, list[GroupSummary]], num_runs: int, skipped: list[tuple[Path, str]],
             with_plots: bool = True) -> str:
    finished = sum(r.finished for s in sections.values() for g in s for r in g.runs)
    lines = ["# mtrl-famo report", "",
             f"{num_runs} run{'s' if num_runs != 1 else ''} ({finished} finished, {num_runs - finished} in "
             f"progress). Success rates are the final evaluation of each run (the latest one for runs in "
             f"progress), with the episodes per task each run logged. Mean: success averaged over tasks "
             f"and seeds; IQM: interquartile mean over seeds x tasks; [95% CI]: stratified percentile "
             f"bootstrap over seeds (shown from 2 seeds on)."]
    if skipped:
        lines += ["", "Left out:", ""] + [f"- `{p}`: {why}" for p, why in skipped]
    for bench, groups in sections.items():
        k = len(groups[0].tasks)
        lines += ["", f"## {pretty_benchmark(bench)} ({k} task{'s' if k != 1 else ''})", ""]
        rows = []
        for g in groups:
            lo, hi = g.steps
            rows.append([g.short or g.name, g.settings or "-", g.protocol, str(len(g.runs)),
                         fmt_steps(lo) if lo == hi else f"{fmt_steps(lo)}-{fmt_steps(hi)}", g.episodes,
                         fmt_ci(g.mean, g.mean_ci), fmt_ci(g.iqm, g.iqm_ci), g.status])
        # The group column is the plots' label; settings: what sets the group apart (the legend's key).
        lines += _md_table(["group", "settings", "protocol", "seeds", "step", "episodes", "mean success [95% CI]",
                            "IQM [95% CI]", "status"], rows, ["l", "l", "l", "r", "r", "r", "l", "l", "l"])
        notes = [n for g in groups for n in g.notes]
        if notes:
            lines += [""] + [f"Note: {n}." for n in notes]
        lines += ["", "Per-task success (mean over seeds):", ""]
        task_rows = [[t] + [f"{g.scores[:, j].mean():.2f}" for g in groups] for j, t in enumerate(groups[0].tasks)]
        task_rows.append(["**mean**"] + [f"**{g.mean:.2f}**" for g in groups])
        lines += _md_table(["task"] + [g.short or g.name for g in groups], task_rows, ["l"] + ["r"] * len(groups))
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
    header = ["benchmark", "aggregator", "protocol", "runs", "seeds", "finished_runs", "step_min", "step_max", "total_steps",
              "episodes", "mean_success", "mean_success_ci_low", "mean_success_ci_high", "iqm", "iqm_ci_low",
              "iqm_ci_high", "status", "settings"]
    rows = []
    for bench, groups in sections.items():
        for g in groups:
            totals = sorted({r.total_steps for r in g.runs if r.total_steps})
            rows.append([bench, g.aggregator, g.protocol, len(g.runs), " ".join(map(str, g.seeds)),
                         sum(r.finished for r in g.runs), *g.steps, " ".join(map(str, totals)), g.episodes,
                         _num(g.mean), _num(g.mean_ci[0]), _num(g.mean_ci[1]), _num(g.iqm), _num(g.iqm_ci[0]),
                         _num(g.iqm_ci[1]), g.status, g.settings])
    return _csv_text(header, rows)


def per_task_csv(sections: dict[str, list[GroupSummary]]) -> str:
    header = ["benchmark", "aggregator", "task", "runs", "mean_success", "ci_low", "ci_high", "std_success",
              "mean_return", "settings"]
    rows = []
    for bench, groups in sections.items():
        for g in groups:
            for j, task in enumerate(g.tasks):
                col = g.scores[:, j]
                rows.append([bench, g.aggregator, task, len(col), _num(float(col.mean())),
                             _num(float(g.task_ci[0][j])), _num(float(g.task_ci[1][j])),
                             _num(float(col.std(ddof=1)) if len(col) > 1 else math.nan),
                             _num(float(np.nanmean(g.returns[:, j])) if not np.isnan(g.returns[:, j]).all()
                                  else math.nan), g.settings])
    return _csv_text(header, rows)


def runs_csv(sections: dict[str, list[GroupSummary]]) -> str:
    header = ["benchmark", "aggregator", "seed", "step", "total_steps", "finished", "episodes", "mean_success",
              "path", "settings"]
    rows = [[bench, g.aggregator, r.seed, r.step, r.total_steps or "", r.finished, r.final.get("episodes", ""),
             _num(r.mean_success), str(r.path), g.settings]
            for bench, groups in sections.items() for g in groups for r in g.runs]
    return _csv_text(header, rows)

