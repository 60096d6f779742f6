"""The reference profile: what a model's training data and predictions looked like, for monitoring.

Training builds it on the test set (`build_profile`) and logs it as JSON at `REFERENCE_PROFILE_PATH` in the
training run; monitoring loads it (`ReferenceProfile.model_validate_json`) and compares a window of live
traffic against it. The schema is versioned; fields are only ever added.

Numeric features keep their quantile function at 1,001 evenly spaced probabilities (enough to compute KS and
Wasserstein distance against live data without the raw rows), ten quantile bins with the reference fraction
in each (for PSI), an equal-width histogram (for plots), and the missing rate. Categorical features keep the
frequencies of their most common categories (the rest pooled under `OTHER_CATEGORY`) and the missing rate.

`profile_summary` writes the same profile for people (a markdown table per kind), logged beside the JSON at
`REFERENCE_PROFILE_SUMMARY_PATH` by training and by `modelloop profile`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from modelloop.contract.errors import InvalidInputError

SCHEMA_VERSION = 1
#: Probabilities at which the quantile function of a numeric feature is stored.
QUANTILE_LEVELS = 1001
#: Number of quantile bins used for PSI.
PSI_BINS = 10
#: Number of equal-width histogram bins kept for plots.
HISTOGRAM_BINS = 30
#: At most this many categories are kept per categorical feature; the rest are pooled.
MAX_CATEGORIES = 100
OTHER_CATEGORY = "__other__"


class NumericProfile(BaseModel):
    """A numeric column's reference distribution."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["numeric"] = "numeric"
    count: int = Field(description="Non-missing values seen.")
    missing_rate: float
    mean: float
    std: float
    min: float
    max: float
    quantiles: list[float] = Field(
        description=f"Values at {QUANTILE_LEVELS} evenly spaced probabilities 0..1."
    )
    bin_edges: list[float] = Field(
        description="Inner edges of the quantile bins (PSI); bins are (-inf, e0], ..."
    )
    bin_fractions: list[float] = Field(description="Reference share of non-missing values in each bin.")
    histogram_edges: list[float]
    histogram_counts: list[int]


class CategoricalProfile(BaseModel):
    """A categorical column's reference distribution."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["categorical"] = "categorical"
    count: int
    missing_rate: float
    frequencies: dict[str, float] = Field(description="Share of non-missing values per category.")


FeatureProfile = Annotated[NumericProfile | CategoricalProfile, Field(discriminator="kind")]


class ReferenceProfile(BaseModel):
    """Every feature's profile, and the prediction's, for one model version."""

    model_config = ConfigDict(frozen=True)

    schema_version: int = SCHEMA_VERSION
    n_rows: int
    task: Literal["classification", "regression"]
    features: dict[str, FeatureProfile]
    prediction: FeatureProfile | None = None


def _is_numeric(series: pd.Series) -> bool:
    return bool(pd.api.types.is_numeric_dtype(series)) and not pd.api.types.is_bool_dtype(series)


def inner_bin_edges(values: np.ndarray, n_bins: int = PSI_BINS) -> np.ndarray:
    """Distinct inner edges of `n_bins` quantile bins of `values` (fewer when values repeat)."""
    if values.size == 0:
        return np.array([], dtype=np.float64)
    edges = np.quantile(values, np.linspace(0.0, 1.0, n_bins + 1)[1:-1])
    return np.unique(edges)


def bin_fractions(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Share of `values` in each bin (-inf, e0], (e0, e1], ..., (e_last, inf)."""
    counts = np.bincount(np.searchsorted(edges, values, side="left"), minlength=edges.size + 1)
    total = counts.sum()
    return counts / total if total else counts.astype(np.float64)


def profile_numeric(series: pd.Series) -> NumericProfile:
    """Profile one numeric column."""
    raw = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    missing = ~np.isfinite(raw)
    values = raw[~missing]
    n = raw.size
    if values.size == 0:
        return NumericProfile(
            count=0,
            missing_rate=1.0 if n else 0.0,
            mean=0.0,
            std=0.0,
            min=0.0,
            max=0.0,
            quantiles=[],
            bin_edges=[],
            bin_fractions=[],
            histogram_edges=[],
            histogram_counts=[],
        )
    edges = inner_bin_edges(values)
    hist_counts, hist_edges = np.histogram(values, bins=HISTOGRAM_BINS)
    return NumericProfile(
        count=int(values.size),
        missing_rate=float(missing.sum() / n),
        mean=float(values.mean()),
        std=float(values.std(ddof=1)) if values.size > 1 else 0.0,
        min=float(values.min()),
        max=float(values.max()),
        quantiles=np.quantile(values, np.linspace(0.0, 1.0, QUANTILE_LEVELS)).tolist(),
        bin_edges=edges.tolist(),
        bin_fractions=bin_fractions(values, edges).tolist(),
        histogram_edges=hist_edges.tolist(),
        histogram_counts=hist_counts.astype(int).tolist(),
    )


def profile_categorical(series: pd.Series) -> CategoricalProfile:
    """Profile one categorical column (values compared as strings)."""
    n = len(series)
    present = series.dropna().astype(str)
    counts = present.value_counts()
    total = int(counts.sum())
    freqs: dict[str, float] = {}
    if total:
        top = counts.iloc[:MAX_CATEGORIES]
        freqs = {str(k): float(v / total) for k, v in top.items()}
        rest = total - int(top.sum())
        if rest:
            freqs[OTHER_CATEGORY] = rest / total
    return CategoricalProfile(
        count=total, missing_rate=float((n - total) / n) if n else 0.0, frequencies=freqs
    )


def profile_column(series: pd.Series) -> NumericProfile | CategoricalProfile:
    """Profile a column as numeric or categorical by its dtype."""
    return profile_numeric(series) if _is_numeric(series) else profile_categorical(series)


def build_profile(
    features: pd.DataFrame,
    predictions: pd.Series | np.ndarray | None,
    *,
    task: Literal["classification", "regression"],
    categorical: Mapping[str, bool] | None = None,
) -> ReferenceProfile:
    """Build the reference profile of `features` and the model's `predictions` on them.

    `categorical` forces a column's kind (e.g. an integer-coded category); by default the dtype decides.
    Classification predictions are profiled as categories, regression predictions as numbers.
    """
    if features.shape[0] == 0:
        raise InvalidInputError("cannot build a reference profile from an empty dataset")
    forced = dict(categorical or {})
    profiles: dict[str, NumericProfile | CategoricalProfile] = {}
    for name in features.columns:
        col = features[name]
        is_cat = forced.get(str(name), not _is_numeric(col))
        profiles[str(name)] = profile_categorical(col) if is_cat else profile_numeric(col)
    pred_profile: NumericProfile | CategoricalProfile | None = None
    if predictions is not None:
        pred = pd.Series(np.asarray(predictions).ravel())
        pred_profile = profile_categorical(pred) if task == "classification" else profile_numeric(pred)
    return ReferenceProfile(
        n_rows=int(features.shape[0]), task=task, features=profiles, prediction=pred_profile
    )


def _num(value: float) -> str:
    return f"{value:.4g}"


def _quantile(profile: NumericProfile, p: float) -> float:
    return profile.quantiles[round(p * (len(profile.quantiles) - 1))]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _numeric_row(name: str, p: NumericProfile) -> str:
    name = _cell(name)
    if not p.quantiles:
        return f"| {name} | 0 | {p.missing_rate:.1%} | | | | | | |"
    cells = [p.mean, p.std, p.min, _quantile(p, 0.05), _quantile(p, 0.5), _quantile(p, 0.95), p.max]
    return f"| {name} | {p.count} | {p.missing_rate:.1%} | " + " | ".join(_num(c) for c in cells) + " |"


def _top_categories(p: CategoricalProfile, shown: int = 5) -> str:
    named = sorted(((k, v) for k, v in p.frequencies.items() if k != OTHER_CATEGORY), key=lambda kv: -kv[1])
    text = ", ".join(f"`{_cell(k)}` {v:.1%}" for k, v in named[:shown])
    rest = len(named) - shown
    if rest > 0:
        text += f", {rest} more"
    if OTHER_CATEGORY in p.frequencies:
        text += f", others pooled {p.frequencies[OTHER_CATEGORY]:.1%}"
    return text


def profile_summary(profile: ReferenceProfile) -> str:
    """The profile as markdown for people: the rows it was built on, one table row per feature (numeric:
    count, missing, mean, std and quantiles; categorical: the most common categories) and the prediction."""
    numeric = {k: p for k, p in profile.features.items() if isinstance(p, NumericProfile)}
    categorical = {k: p for k, p in profile.features.items() if isinstance(p, CategoricalProfile)}
    lines = [
        "# Reference profile",
        "",
        f"Built on {profile.n_rows} rows for a {profile.task} model: {len(numeric)} numeric and "
        f"{len(categorical)} categorical features (schema version {profile.schema_version}). Monitoring "
        "compares each window of live traffic with it; the machine-readable profile is "
        "`reference_profile.json`.",
    ]
    if numeric:
        lines += [
            "",
            "## Numeric features",
            "",
            "| feature | values | missing | mean | std | min | p5 | median | p95 | max |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
            *(_numeric_row(name, p) for name, p in numeric.items()),
        ]
    if categorical:
        lines += [
            "",
            "## Categorical features",
            "",
            "| feature | values | missing | categories | most common |",
            "|---|---:|---:|---:|---|",
            *(
                f"| {_cell(name)} | {p.count} | {p.missing_rate:.1%} | "
                f"{sum(k != OTHER_CATEGORY for k in p.frequencies)} | {_top_categories(p)} |"
                for name, p in categorical.items()
            ),
        ]
    pred = profile.prediction
    if pred is not None:
        lines += ["", "## Prediction", ""]
        if isinstance(pred, CategoricalProfile):
            lines.append(f"Predicted classes: {_top_categories(pred, shown=10) or 'none'}.")
        elif pred.quantiles:
            lines.append(
                f"Predicted values: mean {_num(pred.mean)}, std {_num(pred.std)}, median "
                f"{_num(_quantile(pred, 0.5))}, from {_num(pred.min)} to {_num(pred.max)}."
            )
    return "\n".join(lines) + "\n"


__all__ = [
    "HISTOGRAM_BINS",
    "MAX_CATEGORIES",
    "OTHER_CATEGORY",
    "PSI_BINS",
    "QUANTILE_LEVELS",
    "SCHEMA_VERSION",
    "CategoricalProfile",
    "FeatureProfile",
    "NumericProfile",
    "ReferenceProfile",
    "bin_fractions",
    "build_profile",
    "inner_bin_edges",
    "profile_categorical",
    "profile_column",
    "profile_numeric",
    "profile_summary",
]
