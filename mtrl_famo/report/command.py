"""``mtrl-famo report RUN_DIR... [--out DIR]``: find, read, group and summarize runs, then write the outputs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from mtrl_famo.atomic import write_text
from mtrl_famo.report import ReportError
from mtrl_famo.report.groups import group_runs, short_labels
from mtrl_famo.report.plots import plot_heatmap, plot_learning_curves, plot_per_task_curves, save_figure
from mtrl_famo.report.format import plot_names
from mtrl_famo.report.runs import find_run_dirs, load_run
from mtrl_famo.report.summary import GroupSummary, summarize
from mtrl_famo.report.tables import markdown, per_task_csv, runs_csv, summary_csv

DEFAULT_OUT = "report"


def build_report(paths: Sequence[str | Path]) -> tuple[dict[str, list[GroupSummary]], int, list[tuple[Path, str]]]:
    """Find, read, group and summarize the runs.

    :return: ``({benchmark: [group summaries]}, runs, left out)``: the found folders left out, each
        with why (no evaluation logged yet; a damaged file: the others are still reported).
    """
    runs, skipped = [], []
    for run_dir in find_run_dirs(paths):
        try:
            run = load_run(run_dir)
        except ReportError as exc:
            skipped.append((run_dir, str(exc)))
            continue
        (runs.append(run) if run is not None else skipped.append((run_dir, "no evaluation logged yet")))
    if not runs:
        raise ReportError(f"no run with a logged evaluation in {', '.join(map(str, paths))} "
                          f"(left out: {'; '.join(f'{p} ({why})' for p, why in skipped)})")
    sections = {bench: [summarize(bench, agg, members) for agg, members in by_agg.items()]
                for bench, by_agg in group_runs(runs).items()}
    for groups in sections.values():
        for g, short in zip(groups, short_labels([g.name for g in groups], [g.aggregator for g in groups])):
            g.short = short
    return sections, len(runs), skipped


def write_report(paths: Sequence[str | Path], out: str | Path = DEFAULT_OUT, plots: bool = True) -> str:
    """Write ``report.md``, the CSV tables and the plots into ``out``; return the Markdown."""
    import matplotlib

    matplotlib.use("Agg")
    sections, num_runs, skipped = build_report(paths)
    for path, why in skipped:
        print(f"warning: left out {path}: {why}", file=sys.stderr)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ReportError(f"--out {str(out)!r} is a file; give a folder")
    out.mkdir(parents=True, exist_ok=True)
    text = markdown(sections, num_runs, skipped, with_plots=plots)
    if plots:
        for bench, groups in sections.items():
            names = plot_names(bench)
            save_figure(plot_learning_curves(bench, groups), out / names["learning_curves"])
            save_figure(plot_heatmap(bench, groups), out / names["per_task_heatmap"])
            save_figure(plot_per_task_curves(bench, groups), out / names["per_task_curves"])
    write_text(out / "summary.csv", summary_csv(sections))
    write_text(out / "per_task.csv", per_task_csv(sections))
    write_text(out / "runs.csv", runs_csv(sections))
    write_text(out / "report.md", text)
    return text


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one line (raised) instead of usage + message."""

    def error(self, message: str):  # type: ignore[override]
        raise ReportError(f"{message} (usage: mtrl-famo report RUN_DIR... [--out DIR])")


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="mtrl-famo report",
                description="Tables and plots across runs and seeds, one group per setting (runs differing only in seed).")
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
