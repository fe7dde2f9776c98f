"""Grouping runs across seeds: which runs one confidence interval may pool."""

from __future__ import annotations

import json

from mtrl_famo.config import AGGREGATOR_NAMES
from mtrl_famo.report import ReportError
from mtrl_famo.report.runs import Run

# Config keys that may differ between the seeds of one group without a note.
IGNORED_KEYS = ("seed", "run_dir", "device", "train.progress", "train.torch_threads", "train.compile",
                "train.log_every", "train.checkpoint_every", "benchmark.vector_strategy", "video.")


def aggregator_order(name: str) -> tuple:
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
    return {b: dict(sorted(groups[b].items(), key=lambda kv: aggregator_order(kv[0])))
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

