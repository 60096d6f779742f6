"""Drift statistics of one column of live traffic against its reference profile (pure, vectorised numpy).

Called by `monitoring.drift` once per feature (and once for the prediction). Each function takes the
reference as stored in the profile and the window's values as numpy arrays, and returns plain floats:

- numeric: PSI on the profile's quantile bins, the two-sample Kolmogorov-Smirnov statistic and its
  asymptotic p-value, and the Wasserstein distance normalised by the reference standard deviation;
- categorical: PSI and Jensen-Shannon distance on category frequencies, the chi-square goodness-of-fit
  statistic and p-value against the reference frequencies, and the share of unseen categories.

The reference of a numeric column is its 1,001 stored quantiles, each weighted 1/1001: KS and Wasserstein
are exactly `scipy.stats.ks_2samp(quantiles, current)` and `scipy.stats.wasserstein_distance(quantiles,
current)` (the quantile grid is within 1/1001 of the reference's own distribution function); the KS p-value
uses the reference's real row count, as `ks_2samp(method="asymp")` would on the raw rows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

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


def bin_shares(sorted_values: np.ndarray, inner_edges: np.ndarray) -> np.ndarray:
    """Share of `sorted_values` in the bins (-inf, e0], (e0, e1], ..., (e_last, inf)."""
    n = sorted_values.size
    if n == 0:
        return np.zeros(inner_edges.size + 1)
    at_or_below = np.searchsorted(sorted_values, inner_edges, side="right")
    counts = np.diff(np.concatenate(([0], at_or_below, [n])))
    return np.asarray(counts / n, dtype=np.float64)


def ks_statistic(ref_quantiles: np.ndarray, sorted_current: np.ndarray) -> float:
    """sup |F_ref - F_cur| with F_ref the distribution function of the quantile points (equal weights).

    The supremum lies at a reference point or just before it (between reference points F_ref is flat and
    F_cur monotone), so both one-sided limits at each distinct reference point give it exactly."""
    q = np.asarray(ref_quantiles, dtype=np.float64)
    m, n = q.size, sorted_current.size
    points = np.unique(q)
    ref_at = np.searchsorted(q, points, side="right") / m
    ref_before = np.searchsorted(q, points, side="left") / m
    cur_at = np.searchsorted(sorted_current, points, side="right") / n
    cur_before = np.searchsorted(sorted_current, points, side="left") / n
    return float(max(np.max(np.abs(ref_at - cur_at)), np.max(np.abs(ref_before - cur_before))))


def ks_pvalue(statistic: float, n_reference: int, n_current: int) -> float:
    """Smirnov's asymptotic two-sided p-value, as `scipy.stats.ks_2samp(method="asymp")` computes it."""
    big, small = sorted((float(n_reference), float(n_current)), reverse=True)
    en = big * small / (big + small)
    return float(np.clip(kstwo.sf(statistic, np.round(en)), 0.0, 1.0))


def wasserstein(ref_quantiles: np.ndarray, sorted_current: np.ndarray) -> float:
    """First Wasserstein distance between the quantile points (equal weights) and the current values:
    the integral of |F_ref - F_cur| over the merged sorted values. O(n) on already sorted input."""
    q = np.asarray(ref_quantiles, dtype=np.float64)
    m, n = q.size, sorted_current.size
    pos = np.searchsorted(sorted_current, q, side="right")
    merged = np.insert(sorted_current, pos, q)
    from_ref = np.insert(np.zeros(n), pos, np.ones(m))
    cum_ref = np.cumsum(from_ref)[:-1] / m
    cum_cur = (np.arange(1, n + m) - np.cumsum(from_ref)[:-1]) / n
    return float(np.sum(np.diff(merged) * np.abs(cum_ref - cum_cur)))


def normalised_wasserstein(ref_quantiles: np.ndarray, sorted_current: np.ndarray, ref_std: float) -> float:
    """Wasserstein distance in units of the reference's (population) standard deviation, at least MIN_NORM."""
    return wasserstein(ref_quantiles, sorted_current) / max(ref_std, MIN_NORM)


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
    "MIN_NORM",
    "bin_shares",
    "category_shares",
    "chi_square",
    "jensen_shannon",
    "ks_pvalue",
    "ks_statistic",
    "normalised_wasserstein",
    "population_std",
    "psi",
    "wasserstein",
]
