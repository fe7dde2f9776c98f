"""How reports write numbers and names: step counts, intervals, benchmark titles, plot file names."""

from __future__ import annotations

import math


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

