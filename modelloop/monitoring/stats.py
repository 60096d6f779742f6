"""Drift statistics of one column of live traffic against its reference profile (pure, vectorised numpy).

Called by `modelloop.monitoring.drift` once per feature (and once for the prediction). Each function takes the
reference as stored in the profile and the window's values as numpy arrays, and returns plain floats:

- numeric: PSI on the profile's quantile bins, the two-sample Kolmogorov-Smirnov statistic and its
  asymptotic p-value, and the Wasserstein distance normalised by the reference standard deviation;
- categorical: PSI and Jensen-Shannon distance on category frequencies, the chi-square goodness-of-fit
  statistic and p-value against the reference frequencies, and the share of unseen categories.

The reference of a numeric column is its 1,001 stored quantiles, each weighted 1/1001: KS and Wasserstein
are exactly `scipy.stats.ks_2samp(quantiles, current)` and `scipy.stats.wasserstein_distance(quantiles,
current)` (the quantile grid is within 1/1001 of the reference's own distribution function); the KS p-value
uses the reference's real row count, as `ks_2samp(method="asymp")` would on the raw rows. Both are computed
in O(n) without sorting the window (`compare_numeric`): sorting a million values cost more than everything
else of a feature together.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import chi2, kstwo

#: Shares below this are clipped before logarithms and ratios (Evidently's convention for PSI).
EPSILON = 1e-4
#: The smallest reference standard deviation used to normalise Wasserstein distance (Evidently's).
MIN_NORM = 1e-3


def psi(reference: np.ndarray, current: np.ndarray, *, eps: float = EPSILON) -> float:
    """Population stability index: sum of (cur - ref) * ln(cur / ref) over bins, shares clipped at `eps`."""
    ref = np.clip(np.asarray(reference, dtype=np.float64), eps, None)
    cur = np.clip(np.asarray(current, dtype=np.float64), eps, None)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


#: A window column with at least this many values is located on the grid through equal-width fine bins.
FINE_FROM = 4096
#: Number of equal-width fine bins spanning the comparison grid.
FINE_BINS = 1 << 16


@dataclass(frozen=True)
class NumericComparison:
    """A window column against the reference quantile points (see `compare_numeric`)."""

    count: int
    ks: float  # sup |F_ref - F_cur|
    wasserstein: float  # integral of |F_ref - F_cur| (not normalised)
    grid: np.ndarray  # sorted distinct points: the quantiles and every edge given
    at_or_below_grid: np.ndarray  # how many current values are <= each grid point

    def at_or_below(self, points: np.ndarray) -> np.ndarray:
        """How many current values are <= each of `points` (points given to `compare_numeric` as edges)."""
        return np.asarray(self.at_or_below_grid[np.searchsorted(self.grid, points)], dtype=np.int64)

    def bin_shares(self, inner_edges: np.ndarray) -> np.ndarray:
        """Share of the current values in the bins (-inf, e0], (e0, e1], ..., (e_last, inf)."""
        if self.count == 0:
            return np.zeros(inner_edges.size + 1)
        cum = np.concatenate(([0], self.at_or_below(inner_edges), [self.count]))
        return np.asarray(np.diff(cum) / self.count, dtype=np.float64)


def locate(
    values: np.ndarray, grid: np.ndarray, *, fine_from: int = FINE_FROM
) -> tuple[np.ndarray, np.ndarray]:
    """For each value, how many grid points are <= it (`np.searchsorted(grid, values, side="right")`), and
    for each grid point how many values equal it. Exact, without sorting or searching every value:

    values are mapped to equal-width fine bins over [grid[0], grid[-1]] by x -> floor((x - lo) * scale),
    which is monotone in floating point; a value whose fine bin holds no grid point is above exactly the
    grid points of lower bins, read from a table. Only values sharing a fine bin with a grid point (or every
    value, below `fine_from` values) are searched exactly."""
    g = grid.size
    lo, hi = float(grid[0]), float(grid[-1])
    scale = FINE_BINS / (hi - lo) if hi > lo else math.inf
    if values.size < fine_from or not math.isfinite(scale):
        right = np.searchsorted(grid, values, side="right")
        equal = right - np.searchsorted(grid, values, side="left")
        return right, np.bincount(right[equal > 0] - 1, minlength=g)[:g]

    def fine(x: np.ndarray) -> np.ndarray:
        # bins -1 (below lo) .. FINE_BINS + 1 (far above hi), shifted by one to index from 0
        return np.clip(np.floor((x - lo) * scale), -1, FINE_BINS + 1).astype(np.intp) + 1

    grid_bins = fine(grid)
    table = np.searchsorted(grid_bins, np.arange(FINE_BINS + 3), side="left")
    ambiguous = np.zeros(FINE_BINS + 3, dtype=bool)
    ambiguous[grid_bins] = True
    bins = fine(values)
    right = table[bins]
    exact = np.flatnonzero(ambiguous[bins])
    sub = values[exact]
    sub_right = np.searchsorted(grid, sub, side="right")
    right[exact] = sub_right
    equal = sub_right != np.searchsorted(grid, sub, side="left")
    return right, np.bincount(sub_right[equal] - 1, minlength=g)[:g]


def compare_numeric(
    ref_quantiles: np.ndarray,
    values: np.ndarray,
    *,
    edges: Sequence[np.ndarray] = (),
    fine_from: int = FINE_FROM,
) -> NumericComparison:
    """KS statistic and Wasserstein distance between the reference quantile points (equal weights) and the
    current `values` (finite, any order), plus the current counts at each edge (PSI bins, histogram).

    Both statistics are exact. KS: the supremum lies at a grid point or just before it (between points F_ref
    is flat and F_cur monotone). Wasserstein: on each grid interval F_ref is a constant c; where c is not
    between the interval's lowest and highest F_cur, |c - F_cur| keeps its sign and its integral follows from
    the interval's count and sum of distances to the interval's end; where it is, the crossing value is found
    by partial selection among the interval's values. O(n) with no sort of the window."""
    q = np.asarray(ref_quantiles, dtype=np.float64)
    x = np.asarray(values, dtype=np.float64)
    m, n = q.size, x.size
    grid = np.unique(np.concatenate([q, *[np.asarray(e, dtype=np.float64) for e in edges]]))
    g = grid.size
    if n == 0 or m == 0:
        return NumericComparison(n, math.nan, math.nan, grid, np.zeros(g, dtype=np.int64))
    idx, equal = locate(x, grid, fine_from=fine_from)
    counts = np.bincount(idx, minlength=g + 1)
    # distance of each value to the end of its interval (to the last grid point for values above it)
    dist = np.bincount(idx, weights=grid[np.minimum(idx, g - 1)] - x, minlength=g + 1)
    below = np.cumsum(counts)[:g]  # values < grid point
    at_or_below = below + equal
    ref_at = np.searchsorted(q, grid, side="right")
    ref_before = np.searchsorted(q, grid, side="left")
    ks = float(max(np.max(np.abs(ref_at / m - at_or_below / n)), np.max(np.abs(ref_before / m - below / n))))
    # tails: F_ref = 0 below the first grid point, 1 from the last on
    total = (dist[0] - dist[g]) / n
    if g > 1:
        length = np.diff(grid)
        c_num = ref_at[:-1] * n  # F_ref on [g_j, g_j+1) is c_num / (m n); F_cur compared as counts * m
        lowest, highest = at_or_below[:-1] * m, below[1:] * m
        integral = (below[:-1] * length + dist[1:g]) / n  # of F_cur over each interval
        c = ref_at[:-1] / m
        above = c_num <= lowest
        under = c_num >= highest
        total += float(np.sum((integral - c * length)[above]) + np.sum((c * length - integral)[under]))
        crossing = np.flatnonzero(~(above | under))
        if crossing.size:
            total += _crossing_intervals(
                x,
                idx,
                crossing=crossing,
                grid=grid,
                below=below,
                ref_at=ref_at,
                counts=counts,
                integral=integral,
                m=m,
                n=n,
            )
    return NumericComparison(n, ks, float(total), grid, at_or_below)


def _crossing_intervals(
    x: np.ndarray,
    idx: np.ndarray,
    *,
    crossing: np.ndarray,
    grid: np.ndarray,
    below: np.ndarray,
    ref_at: np.ndarray,
    counts: np.ndarray,
    integral: np.ndarray,
    m: int,
    n: int,
) -> float:
    """Integral of |F_ref - F_cur| over the grid intervals where F_cur crosses the constant F_ref."""
    in_crossing = np.zeros(grid.size + 1, dtype=bool)
    in_crossing[crossing + 1] = True
    chosen = np.flatnonzero(in_crossing[idx])
    keys = idx[chosen]
    order = np.argsort(keys.astype(np.int16) if grid.size < 32_000 else keys, kind="stable")
    grouped = x[chosen[order]]
    sizes = counts[crossing + 1]
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    total = 0.0
    for j, start, size in zip(crossing.tolist(), starts.tolist(), sizes.tolist(), strict=True):
        a, b = grid[j], grid[j + 1]
        base = int(below[j])
        # smallest r with (base + r) m >= ref_at n: F_cur reaches F_ref at the r-th smallest value
        r = -(-(int(ref_at[j]) * n - base * m) // m)
        part = np.partition(grouped[start : start + size], r - 1)
        v = float(part[r - 1])
        c = ref_at[j] / m
        left = (base * (v - a) + float(np.sum(v - part[: r - 1]))) / n  # integral of F_cur over [a, v)
        total += (c * (v - a) - left) + ((integral[j] - left) - c * (b - v))
    return total


def ks_statistic(ref_quantiles: np.ndarray, current: np.ndarray) -> float:
    """sup |F_ref - F_cur| with F_ref the distribution function of the quantile points (equal weights)."""
    return compare_numeric(ref_quantiles, current).ks


def ks_pvalue(statistic: float, n_reference: int, n_current: int) -> float:
    """Smirnov's asymptotic two-sided p-value, as `scipy.stats.ks_2samp(method="asymp")` computes it."""
    big, small = sorted((float(n_reference), float(n_current)), reverse=True)
    en = big * small / (big + small)
    return float(np.clip(kstwo.sf(statistic, np.round(en)), 0.0, 1.0))


def wasserstein(ref_quantiles: np.ndarray, current: np.ndarray) -> float:
    """First Wasserstein distance between the quantile points (equal weights) and the current values."""
    return compare_numeric(ref_quantiles, current).wasserstein


def normalise(distance: float, ref_std: float) -> float:
    """A Wasserstein distance in units of the reference's (population) standard deviation (at least
    MIN_NORM)."""
    return distance / max(ref_std, MIN_NORM)


def normalised_wasserstein(ref_quantiles: np.ndarray, current: np.ndarray, ref_std: float) -> float:
    """Wasserstein distance in units of the reference's (population) standard deviation, at least MIN_NORM."""
    return normalise(wasserstein(ref_quantiles, current), ref_std)


def population_std(sample_std: float, count: int) -> float:
    """Convert a sample standard deviation (ddof=1, as profiles store it) to the population one (ddof=0)."""
    if count <= 1:
        return 0.0
    return sample_std * math.sqrt((count - 1) / count)


def category_shares(
    values: np.ndarray, reference: Mapping[str, float], *, other: str
) -> tuple[np.ndarray, np.ndarray, float]:
    """Count `values` (strings, missing already removed) into the reference's categories.

    Returns (reference shares, current counts, unseen share). The last bin is `other`: it holds the
    reference's pooled share (0 when it pooled nothing) and every current value not named in the reference.
    """
    named = [k for k in reference if k != other]
    ref = np.array([reference[k] for k in named] + [reference.get(other, 0.0)], dtype=np.float64)
    if values.size == 0:
        return ref, np.zeros(ref.size), 0.0
    uniques, counts = np.unique(values, return_counts=True)
    index = {k: i for i, k in enumerate(named)}
    cur = np.zeros(ref.size)
    unseen = 0
    for value, count in zip(uniques.tolist(), counts.tolist(), strict=True):
        i = index.get(value)
        if i is None:
            cur[-1] += count
            if value != other:
                unseen += count
        else:
            cur[i] += count
    return ref, cur, unseen / values.size


def jensen_shannon(reference: np.ndarray, current: np.ndarray) -> float:
    """Jensen-Shannon distance (natural log), as `scipy.spatial.distance.jensenshannon` computes it."""
    p = np.asarray(reference, dtype=np.float64)
    q = np.asarray(current, dtype=np.float64)
    p, q = p / p.sum(), q / q.sum()
    mid = (p + q) / 2.0

    def kl(a: np.ndarray) -> float:
        nz = a > 0
        return float(np.sum(a[nz] * np.log(a[nz] / mid[nz])))

    return math.sqrt(max((kl(p) + kl(q)) / 2.0, 0.0))


def chi_square(
    reference: np.ndarray, current_counts: np.ndarray, *, eps: float = EPSILON
) -> tuple[float, float]:
    """Chi-square goodness of fit of the current counts to the reference shares (clipped at `eps` and
    renormalised so no expected count is zero): (statistic, p-value with k - 1 degrees of freedom)."""
    ref = np.clip(np.asarray(reference, dtype=np.float64), eps, None)
    expected = ref / ref.sum() * current_counts.sum()
    stat = float(np.sum((current_counts - expected) ** 2 / expected))
    dof = max(ref.size - 1, 1)
    return stat, float(chi2.sf(stat, dof))


__all__ = [
    "EPSILON",
    "FINE_BINS",
    "FINE_FROM",
    "MIN_NORM",
    "NumericComparison",
    "category_shares",
    "chi_square",
    "compare_numeric",
    "jensen_shannon",
    "ks_pvalue",
    "ks_statistic",
    "locate",
    "normalise",
    "normalised_wasserstein",
    "population_std",
    "psi",
    "wasserstein",
]
