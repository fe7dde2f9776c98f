"""Statistics on score matrices: interquartile mean and percentile bootstrap intervals (NumPy only).

Usable on their own: ``stratified_bootstrap_ci(scores, "iqm")`` for any ``[runs, tasks]`` matrix.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy.stats import trim_mean

CONFIDENCE = 0.95
TABLE_REPS = 10_000  # bootstrap replicates of the final-evaluation statistics
CURVE_REPS = 1_000  # per point of a learning curve


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

