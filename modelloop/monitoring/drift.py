"""Drift of a window against a reference profile: per-feature statistics, the rule that decides, the dataset.

Called by `modelloop.monitoring.job` (feature by feature, as the window's columns are read) and by tests and
benchmarks directly. `feature_drift` turns one column into a `FeatureDrift` (statistics from
`monitoring.stats`, the PSI band, and the decision); `summarise` decides whether the dataset drifted.

Rules (thresholds in `DriftRules`): a feature with fewer than `min_rows` present values is insufficient,
not drifted; with more than `large_window_rows` it drifts when normalised Wasserstein (numeric) or
Jensen-Shannon (categorical) reaches its threshold; otherwise when the KS (numeric) or chi-square
(categorical) p-value is below `p_value`. PSI is reported with its bands but decides nothing: people read a
feature's verdict from `decided_by` (the statistic of `stats` that decided) and `threshold`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from modelloop.contract.profile import OTHER_CATEGORY, CategoricalProfile, NumericProfile
from modelloop.monitoring import stats
from modelloop.monitoring.config import DriftRules

Status = Literal["ok", "insufficient", "absent"]


@dataclass(frozen=True)
class FeatureDrift:
    """One column's drift. `stats` maps a statistic's metric name (`psi`, `ks_stat`, ...) to its value."""

    name: str
    kind: Literal["numeric", "categorical"]
    count: int  # present (non-missing) values in the window
    status: Status
    drifted: bool
    rule: str  # the statistic and threshold that decided, e.g. "wasserstein >= 0.1"
    psi_band: Literal["none", "moderate", "major"]
    stats: dict[str, float]
    # for plots: bin labels or edges, and reference / current shares per bin
    plot_bins: list[str] | list[float] = field(default_factory=list)
    plot_reference: list[float] = field(default_factory=list)
    plot_current: list[float] = field(default_factory=list)
    decided_by: str | None = None  # the key of `stats` the rule compared (None: not evaluated)
    threshold: float | None = None  # what it was compared with

    @property
    def deciding_value(self) -> float | None:
        """The value of the statistic that decided, or None when the feature was not evaluated."""
        return self.stats.get(self.decided_by) if self.decided_by else None


@dataclass(frozen=True)
class DriftSummary:
    """The dataset's verdict over the evaluated features."""

    evaluated: int
    drifted: int
    share_drifted: float
    dataset_drifted: bool
    status: Status
    rule: str


def numeric_values(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A column as float64 with NaN for missing; non-numeric text counts as missing."""
    if (
        pa.types.is_integer(column.type)
        or pa.types.is_floating(column.type)
        or pa.types.is_boolean(column.type)
    ):
        return np.asarray(pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
    series = pd.to_numeric(pd.Series(column.to_pandas()), errors="coerce")
    return np.asarray(series.to_numpy(dtype=np.float64, na_value=np.nan), dtype=np.float64)


def category_values(column: pa.ChunkedArray | pa.Array, reference_keys: Mapping[str, float]) -> np.ndarray:
    """A column as strings (missing dropped), written the way profiles write categories.

    Floats that are all whole numbers are written as integers when the reference's categories are
    integers (a label logged as 1.0 is the category "1")."""
    series = pd.Series(column.to_pandas()).dropna()
    if series.empty:
        return np.array([], dtype=object)
    if pd.api.types.is_float_dtype(series) and _integer_keys(reference_keys):
        values = series.to_numpy(dtype=np.float64)
        if np.all(np.isfinite(values)) and np.all(values == np.round(values)):
            series = pd.Series(values.astype(np.int64))
    return np.asarray(series.astype(str).to_numpy(), dtype=object)


def _integer_keys(keys: Mapping[str, float]) -> bool:
    named = [k for k in keys if k != OTHER_CATEGORY]
    return bool(named) and all(k.lstrip("-").isdigit() for k in named)


def psi_band(value: float, rules: DriftRules) -> Literal["none", "moderate", "major"]:
    if value >= rules.psi_major:
        return "major"
    if value >= rules.psi_moderate:
        return "moderate"
    return "none"


def numeric_drift(
    name: str, profile: NumericProfile, values: np.ndarray, rules: DriftRules, *, total: int | None = None
) -> FeatureDrift:
    """Drift of one numeric column (`values`: float64, NaN for missing) against its profile."""
    total = values.size if total is None else total
    present = values[np.isfinite(values)]
    n = int(present.size)
    missing_rate = 1.0 - n / total if total else 0.0
    base = {"missing_rate": missing_rate, "missing_rate_change": missing_rate - profile.missing_rate}
    if n < rules.min_rows or profile.count == 0 or not profile.quantiles:
        status: Status = "absent" if profile.count == 0 or not profile.quantiles else "insufficient"
        return FeatureDrift(
            name, "numeric", n, status, False, f"fewer than {rules.min_rows} values", "none", base
        )
    q = np.asarray(profile.quantiles, dtype=np.float64)
    edges = np.asarray(profile.bin_edges, dtype=np.float64)
    hist_edges = np.asarray(profile.histogram_edges, dtype=np.float64)
    compared = stats.compare_numeric(q, present, edges=(edges, hist_edges))
    psi_value = stats.psi(np.asarray(profile.bin_fractions), compared.bin_shares(edges))
    ks = compared.ks
    ks_p = stats.ks_pvalue(ks, profile.count, n)
    wd = stats.normalise(compared.wasserstein, stats.population_std(profile.std, profile.count))
    if n > rules.large_window_rows:
        drifted, rule = wd >= rules.wasserstein, f"wasserstein >= {rules.wasserstein:g}"
        decided_by, threshold = "wasserstein", rules.wasserstein
    else:
        drifted, rule = ks_p < rules.p_value, f"ks_pvalue < {rules.p_value:g}"
        decided_by, threshold = "ks_pvalue", rules.p_value
    ref_hist = np.asarray(profile.histogram_counts, dtype=np.float64)
    cur_hist = np.diff(compared.at_or_below(hist_edges)) if hist_edges.size else np.array([])
    return FeatureDrift(
        name,
        "numeric",
        n,
        "ok",
        bool(drifted),
        rule,
        psi_band(psi_value, rules),
        {**base, "psi": psi_value, "ks_stat": ks, "ks_pvalue": ks_p, "wasserstein": wd},
        plot_bins=hist_edges.tolist(),
        plot_reference=(ref_hist / max(ref_hist.sum(), 1.0)).tolist(),
        plot_current=(cur_hist / n).tolist(),
        decided_by=decided_by,
        threshold=threshold,
    )


def categorical_drift(
    name: str, profile: CategoricalProfile, values: np.ndarray, rules: DriftRules, *, total: int
) -> FeatureDrift:
    """Drift of one categorical column (`values`: strings without missing ones; `total` counts all rows)."""
    n = int(values.size)
    missing_rate = 1.0 - n / total if total else 0.0
    base = {"missing_rate": missing_rate, "missing_rate_change": missing_rate - profile.missing_rate}
    if n < rules.min_rows or not profile.frequencies:
        status: Status = "absent" if not profile.frequencies else "insufficient"
        return FeatureDrift(
            name, "categorical", n, status, False, f"fewer than {rules.min_rows} values", "none", base
        )
    ref, counts, unseen = stats.category_shares(values, profile.frequencies, other=OTHER_CATEGORY)
    cur = counts / n
    psi_value = stats.psi(ref, cur)
    js = stats.jensen_shannon(ref, cur)
    chi, chi_p = stats.chi_square(ref, counts)
    if n > rules.large_window_rows:
        drifted, rule = js >= rules.jensen_shannon, f"jensen_shannon >= {rules.jensen_shannon:g}"
        decided_by, threshold = "js", rules.jensen_shannon
    else:
        drifted, rule = chi_p < rules.p_value, f"chi2_pvalue < {rules.p_value:g}"
        decided_by, threshold = "chi2_pvalue", rules.p_value
    labels = [k for k in profile.frequencies if k != OTHER_CATEGORY] + [OTHER_CATEGORY]
    shown = [i for i, label in enumerate(labels) if label != OTHER_CATEGORY or ref[i] > 0 or cur[i] > 0]
    return FeatureDrift(
        name,
        "categorical",
        n,
        "ok",
        bool(drifted),
        rule,
        psi_band(psi_value, rules),
        {**base, "psi": psi_value, "js": js, "chi2": chi, "chi2_pvalue": chi_p, "unseen_share": unseen},
        plot_bins=[labels[i] for i in shown],  # no bar for an "others" pool empty on both sides
        plot_reference=[float(ref[i]) for i in shown],
        plot_current=[float(cur[i]) for i in shown],
        decided_by=decided_by,
        threshold=threshold,
    )


def feature_drift(
    name: str,
    profile: NumericProfile | CategoricalProfile,
    column: pa.ChunkedArray | pa.Array | None,
    rules: DriftRules,
    *,
    total: int,
) -> FeatureDrift:
    """Drift of one logged column (None when the log lacks it: every value missing) against its profile."""
    if column is None:
        result = feature_drift(name, profile, pa.nulls(total, pa.float64()), rules, total=total)
        return replace(result, status="absent", rule="not in the prediction log")
    if isinstance(profile, NumericProfile):
        return numeric_drift(name, profile, numeric_values(column), rules, total=total)
    return categorical_drift(name, profile, category_values(column, profile.frequencies), rules, total=total)


def summarise(features: Mapping[str, FeatureDrift], rules: DriftRules) -> DriftSummary:
    """Share of drifted features among those evaluated, and whether it makes the dataset drifted."""
    evaluated = [f for f in features.values() if f.status == "ok"]
    drifted = sum(f.drifted for f in evaluated)
    rule = f"share_drifted >= {rules.drift_share:g}"
    if not evaluated:
        return DriftSummary(0, 0, 0.0, False, "insufficient", rule)
    share = drifted / len(evaluated)
    return DriftSummary(len(evaluated), drifted, share, share >= rules.drift_share, "ok", rule)


__all__ = [
    "DriftSummary",
    "FeatureDrift",
    "categorical_drift",
    "category_values",
    "feature_drift",
    "numeric_drift",
    "numeric_values",
    "psi_band",
    "summarise",
]
