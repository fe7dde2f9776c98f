"""Grouping runs across seeds: which runs one confidence interval may pool."""

from __future__ import annotations

import json

from mtrl_famo.config import AGGREGATOR_NAMES
from mtrl_famo.report import ReportError
from mtrl_famo.report.runs import Run

# Config keys in which the seeds of one group may differ: seed, paths, logging and speed settings.
IGNORED_KEYS = ("seed", "run_dir", "device", "train.progress", "train.torch_threads", "train.compile",
                "train.log_every", "train.checkpoint_every", "benchmark.vector_strategy", "video.")


PROTOCOL_KEY = "protocol.name"
NETWORK_KEY = "agent.network"


def protocol_of(run: Run) -> str:
    """The run's protocol preset; runs from before protocols existed followed ``default``."""
    return str(run.config.get(PROTOCOL_KEY, "default"))


def aggregator_order(name: str) -> tuple:
    return (AGGREGATOR_NAMES.index(name) if name in AGGREGATOR_NAMES else len(AGGREGATOR_NAMES), name)


def ignored(key: str) -> bool:
    """Whether runs may differ in ``key`` and still be seeds of one setting (seed, paths, logging, speed)."""
    return key in IGNORED_KEYS or any(key.startswith(p) for p in IGNORED_KEYS if p.endswith("."))


def setting(run: Run) -> tuple:
    """Every config value of ``run`` that defines what was trained (all keys but the ignored ones)."""
    return tuple(sorted((k, json.dumps(v, sort_keys=True)) for k, v in run.config.items() if not ignored(k)))


def group_runs(runs: list[Run]) -> dict[str, dict[str, list[Run]]]:
    """``{benchmark: {group name: [runs by seed]}}``: one group per setting, never two settings in one.

    Runs are seeds of one group only when every config value but the seed, paths and logging
    agrees (so a ``protocol``, width or learning rate added to the config later splits groups
    with no change here). A group is named by its aggregator, followed by the values that set it
    apart from the other groups of its benchmark, e.g. ``famo (agent.critic_lr=0.001)``.

    :raises ReportError: if the runs of one group evaluate different tasks.
    """
    by_setting: dict[str, dict[tuple, list[Run]]] = {}
    for run in runs:
        by_setting.setdefault(run.benchmark, {}).setdefault(setting(run), []).append(run)
    sections = {}
    for bench in sorted(by_setting, key=_benchmark_order):
        named = {}
        for key, members in by_setting[bench].items():
            members.sort(key=lambda r: (r.seed, str(r.path)))
            name = group_name(members[0], list(by_setting[bench]))
            for other in members[1:]:
                if other.tasks != members[0].tasks:
                    raise ReportError(
                        f"runs {str(members[0].path)!r} and {str(other.path)!r} have the same settings but evaluate "
                        f"different tasks ({len(members[0].tasks)} vs {len(other.tasks)}); report them separately")
            named[name] = members
        sections[bench] = dict(sorted(named.items(), key=lambda kv: (aggregator_order(kv[1][0].aggregator), kv[0])))
    return sections


def group_name(run: Run, settings: list[tuple]) -> str:
    """``aggregator`` plus each value that differs between ``settings`` (the groups of one benchmark).

    Options of the aggregator (``aggregator.*``) are named only where groups of the same aggregator
    differ in them; ``protocol.name`` wherever two groups differ in it; other keys only where groups
    of the same protocol differ in them (a protocol's own values are named by the protocol).
    ``agent.network`` other than ``mlp`` is always named: a label never hides the network.
    """
    own = dict(setting(run))
    everyone = [dict(s) for s in settings]
    same_protocol = [s for s in everyone if s.get(PROTOCOL_KEY) == own.get(PROTOCOL_KEY)]
    same_aggregator = [s for s in same_protocol if s.get("aggregator.name") == own.get("aggregator.name")]
    parts = []
    for key in sorted(own):
        if key == "aggregator.name":
            continue
        pool = everyone if key == PROTOCOL_KEY else same_aggregator if key.startswith("aggregator.") else same_protocol
        if any(s.get(key) != own[key] for s in pool) or (key == NETWORK_KEY and json.loads(own[key]) != "mlp"):
            parts.append(f"{key}={show_value(json.loads(own[key]))}")
    return run.aggregator + (f" ({', '.join(parts)})" if parts else "")


def show_value(value) -> str:
    """A config value as the command line writes it: ``null``, ``true``, ``[400,400]``, ``famo``."""
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def short_labels(names: list[str], aggregators: list[str]) -> list[str]:
    """Short plot labels of a benchmark's groups: the aggregator where it names one group, else the
    aggregator and a letter in group order (``cagrad A``, ``cagrad B``); report.md keys them to the
    full settings. :param names: the groups' full names; :param aggregators: their aggregators."""
    labels, seen = [], {}
    for name, agg in zip(names, aggregators):
        if aggregators.count(agg) == 1:
            labels.append(agg)
        else:
            seen[agg] = seen.get(agg, 0) + 1
            labels.append(f"{agg} {_letters(seen[agg])}")
    return labels


def _letters(n: int) -> str:
    """1 -> A, 26 -> Z, 27 -> AA."""
    out = ""
    while n:
        n, r = divmod(n - 1, 26)
        out = chr(ord("A") + r) + out
    return out


def _benchmark_order(bench: str) -> tuple:
    """MT10, MT50, then MT1 tasks alphabetically."""
    return ({"mt10": 0, "mt50": 1}.get(bench, 2), bench)


def config_differences(members: list[Run]) -> dict[str, list]:
    """Config keys (beyond seed, paths and logging) whose values differ between the runs of a group."""
    keys = sorted(set().union(*(r.config for r in members)))
    diffs = {}
    for key in keys:
        if ignored(key):
            continue
        values = [r.config.get(key) for r in members]
        if any(v != values[0] for v in values[1:]):
            diffs[key] = sorted({json.dumps(v) for v in values})
    return diffs

