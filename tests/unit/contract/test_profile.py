"""The reference profile: shapes, bins and round-trip through JSON."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from modelloop.contract.errors import InvalidInputError
from modelloop.contract.profile import (
    OTHER_CATEGORY,
    PSI_BINS,
    QUANTILE_LEVELS,
    CategoricalProfile,
    NumericProfile,
    ReferenceProfile,
    bin_fractions,
    build_profile,
)


def _frame(n: int = 1000) -> pd.DataFrame:
    rng = np.random.default_rng(7)
    x = rng.normal(10.0, 2.0, n)
    x[:50] = np.nan
    return pd.DataFrame({"x": x, "colour": rng.choice(["red", "green", "blue"], n, p=[0.5, 0.3, 0.2])})


def test_numeric_profile_has_quantiles_bins_and_missing_rate() -> None:
    profile = build_profile(_frame(), np.zeros(1000), task="classification")
    x = profile.features["x"]
    assert isinstance(x, NumericProfile)
    assert x.count == 950
    assert x.missing_rate == pytest.approx(0.05)
    assert len(x.quantiles) == QUANTILE_LEVELS
    assert x.quantiles == sorted(x.quantiles)
    assert len(x.bin_edges) == PSI_BINS - 1
    assert sum(x.bin_fractions) == pytest.approx(1.0)
    assert all(abs(f - 0.1) < 0.01 for f in x.bin_fractions)
    assert sum(x.histogram_counts) == 950
    assert x.mean == pytest.approx(10.0, abs=0.2)


def test_categorical_profile_and_prediction_kind() -> None:
    profile = build_profile(_frame(), np.array([0, 1] * 500), task="classification")
    colour = profile.features["colour"]
    assert isinstance(colour, CategoricalProfile)
    assert set(colour.frequencies) == {"red", "green", "blue"}
    assert sum(colour.frequencies.values()) == pytest.approx(1.0)
    assert isinstance(profile.prediction, CategoricalProfile)
    assert profile.prediction.frequencies == {"0": 0.5, "1": 0.5}


def test_regression_prediction_is_numeric_and_json_round_trips() -> None:
    profile = build_profile(_frame(), np.linspace(0, 1, 1000), task="regression")
    assert isinstance(profile.prediction, NumericProfile)
    again = ReferenceProfile.model_validate_json(profile.model_dump_json())
    assert again == profile


def test_rare_categories_are_pooled() -> None:
    frame = pd.DataFrame({"c": [f"v{i}" for i in range(300)] + ["common"] * 300})
    profile = build_profile(frame, None, task="regression")
    freqs = profile.features["c"].frequencies  # type: ignore[union-attr]
    assert OTHER_CATEGORY in freqs
    assert len(freqs) == 101
    assert sum(freqs.values()) == pytest.approx(1.0)


def test_empty_dataset_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="empty"):
        build_profile(pd.DataFrame({"x": []}), None, task="regression")


def test_bin_fractions_match_direct_count() -> None:
    values = np.array([0.0, 1.0, 1.0, 2.0, 3.0, 5.0])
    edges = np.array([1.0, 3.0])
    assert bin_fractions(values, edges).tolist() == pytest.approx([3 / 6, 2 / 6, 1 / 6])
