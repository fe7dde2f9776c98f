"""The report's figures: learning curves, per-task heatmap and per-task curves (matplotlib, PNG)."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np

from mtrl_famo.atomic import atomic_write
from mtrl_famo.config import AGGREGATOR_NAMES
from mtrl_famo.report.format import fmt_steps, pretty_benchmark
from mtrl_famo.report.groups import aggregator_order
from mtrl_famo.report.stats import CURVE_REPS, bootstrap_ci_over_runs, stratified_bootstrap_ci
from mtrl_famo.report.summary import GroupSummary, curves


def _colors(groups: list[GroupSummary]) -> dict[str, tuple]:
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    # A fixed colour per known aggregator, so plots of different reports agree; further groups of an
    # aggregator (other settings) take the colours after those.
    colors, spare = {}, len(AGGREGATOR_NAMES)
    for g in groups:
        if g.name == g.aggregator and g.aggregator in AGGREGATOR_NAMES:
            colors[g.name] = cmap(aggregator_order(g.aggregator)[0])
        else:
            colors[g.name], spare = cmap(spare % cmap.N), spare + 1
    return colors


def _step_formatter():
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda x, _pos: fmt_steps(x))


def plot_learning_curves(bench: str, groups: list[GroupSummary]):
    import matplotlib.pyplot as plt

    colors = _colors(groups)
    outside = len(groups) > 4  # the legend goes beside the axes, where it hides no curve
    fig, ax = plt.subplots(figsize=(10.0 if outside else 7.5, 4.5), layout="constrained")
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
        ax.plot(grid, mean, color=colors[g.name], marker=marker, markersize=3.5, linewidth=1.8,
                label=g.label + ("" if g.finished else ", in progress"))
        if not np.isnan(low).all():
            ax.fill_between(grid, low, high, color=colors[g.name], alpha=0.2, linewidth=0)
    ax.set_xlabel("environment steps (summed over tasks)")
    ax.set_ylabel(f"success rate (mean over {k} task{'s' if k != 1 else ''})")
    fig.suptitle(f"{pretty_benchmark(bench)}: evaluation success, mean over seeds with 95% CI band")
    ax.set_ylim(-0.02, 1.02)
    ax.xaxis.set_major_formatter(_step_formatter())
    ax.grid(alpha=0.3)
    if not outside:
        ax.legend(title="group", loc="best", frameon=True)
    else:
        fig.legend(*ax.get_legend_handles_labels(), title="group", loc="outside right center", fontsize=9)
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
    width = max(5.5, 2.8 + 1.3 * len(groups))
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
    data = {g.name: curves(g.runs, tasks) for g in groups}
    bands = {g.name: bootstrap_ci_over_runs(data[g.name][1]) for g in groups}
    for j, task in enumerate(tasks):
        ax = axes[j // ncols][j % ncols]
        for g in groups:
            grid, success = data[g.name]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", category=RuntimeWarning)
                mean = np.nanmean(success[:, :, j], axis=0)
            ax.plot(grid, mean, color=colors[g.name], linewidth=1.5, label=g.label)
            low, high = bands[g.name][0][:, j], bands[g.name][1][:, j]
            if not np.isnan(low).all():
                ax.fill_between(grid, low, high, color=colors[g.name], alpha=0.2, linewidth=0)
        ax.set_title(task, fontsize=9)
        ax.set_ylim(-0.04, 1.04)
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_formatter(_step_formatter())
        ax.tick_params(labelsize=8)
    for j in range(len(tasks), nrows * ncols):
        axes[j // ncols][j % ncols].set_visible(False)
        axes[(j // ncols) - 1][j % ncols].xaxis.set_tick_params(labelbottom=True)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right upper", title="group", fontsize=9)
    fig.supxlabel("environment steps (summed over tasks)", fontsize=10)
    fig.supylabel("success rate (mean over seeds, 95% CI)", fontsize=10)
    fig.suptitle(f"{pretty_benchmark(bench)}: per-task evaluation success", fontsize=11)
    return fig



def save_figure(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    try:
        atomic_write(path, lambda f: fig.savefig(f, dpi=110, format="png"))
    finally:
        plt.close(fig)

