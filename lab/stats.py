"""Statistics for comparisons over seeds: interquartile mean and percentile-bootstrap intervals.

Pure numpy. ``iqm`` is the mean of the middle half (scipy's ``trim_mean(x, 0.25)``: it cuts
``int(0.25 * n)`` values from each end), the aggregate that rliable (Agarwal et al., 2021)
recommends for few seeds. ``bootstrap_ci`` resamples the seeds with replacement and takes the
percentiles of the statistic (the percentile bootstrap); ``bootstrap_band`` does the same for
the mean at every point of a set of curves.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

__all__ = ["bootstrap_band", "bootstrap_ci", "iqm"]


def iqm(values, axis: int = -1) -> np.ndarray | float:
    """Interquartile mean along ``axis``: sort, drop ``int(0.25 * n)`` from each end, mean."""
    x = np.sort(np.asarray(values, dtype=float), axis=axis)
    n = x.shape[axis]
    cut = int(0.25 * n)
    kept = np.take(x, np.arange(cut, n - cut), axis=axis)
    out = kept.mean(axis=axis)
    return float(out) if np.ndim(out) == 0 else out


def bootstrap_ci(values, statistic: Callable = np.mean, *, n_boot: int = 10_000,
                 confidence: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """``(statistic(values), low, high)``: the percentile-bootstrap interval of ``statistic``
    over resamples of ``values`` with replacement. NaNs for no values; a point for one."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return math.nan, math.nan, math.nan
    point = float(statistic(x))
    if x.size == 1:
        return point, point, point
    rng = np.random.default_rng(seed)
    samples = x[rng.integers(0, x.size, size=(n_boot, x.size))]
    stats = np.asarray(statistic(samples, axis=1), dtype=float)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(stats, [tail, 100 - tail])
    return point, float(low), float(high)


def bootstrap_band(data, *, n_boot: int = 2000, confidence: float = 0.95,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For ``data`` of shape (seeds, points): the mean over seeds at each point and its
    percentile-bootstrap interval, resampling whole seeds (curves stay intact)."""
    data = np.asarray(data, dtype=float)
    mean = data.mean(axis=0)
    if data.shape[0] < 2:
        return mean, mean.copy(), mean.copy()
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, data.shape[0], size=(n_boot, data.shape[0]))
    means = data[idx].mean(axis=1)  # (n_boot, points)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail], axis=0)
    return mean, low, high
