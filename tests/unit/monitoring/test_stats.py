"""Each drift statistic against scipy or its direct formula, to 1e-9, on fixed seeded data."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from scipy import stats as sps
from scipy.spatial.distance import jensenshannon

from modelloop.contract.profile import OTHER_CATEGORY, profile_categorical, profile_numeric
from modelloop.monitoring import stats
from modelloop.monitoring.config import DriftRules
from modelloop.monitoring.drift import category_values, feature_drift, numeric_drift, psi_band

TOL = 1e-9


def _data(seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ref = rng.normal(0.0, 1.0, 5000)
    cur = np.round(rng.normal(0.3, 1.2, 2500), 2)  # rounded: ties inside the current sample
    return ref, cur


def test_ks_matches_scipy_on_the_quantile_points() -> None:
    ref, cur = _data()
    q = np.asarray(profile_numeric(pd.Series(ref)).quantiles)
    expected = sps.ks_2samp(q, cur, method="asymp")
    d = stats.ks_statistic(q, cur)
    assert abs(d - expected.statistic) < TOL
    assert abs(stats.ks_pvalue(d, q.size, cur.size) - expected.pvalue) < TOL


def test_ks_with_ties_in_the_reference() -> None:
    rng = np.random.default_rng(3)
    ref = np.round(rng.normal(size=1001), 1)  # many repeated quantiles
    cur = np.round(rng.normal(0.1, 1.0, 700), 1)
    expected = sps.ks_2samp(ref, cur, method="asymp")
    d = stats.ks_statistic(np.sort(ref), cur)
    assert abs(d - expected.statistic) < TOL
    assert abs(stats.ks_pvalue(d, ref.size, cur.size) - expected.pvalue) < TOL


def test_ks_pvalue_uses_the_real_reference_size() -> None:
    # the p-value of the raw reference rows (n=5000), not of the 1001 quantile points
    assert stats.ks_pvalue(0.03, 5000, 2500) == pytest.approx(
        sps.kstwo.sf(0.03, round(5000 * 2500 / 7500)), abs=TOL
    )
    assert stats.ks_pvalue(0.03, 5000, 2500) < stats.ks_pvalue(0.03, 1001, 2500)


def test_wasserstein_matches_scipy() -> None:
    ref, cur = _data()
    q = np.asarray(profile_numeric(pd.Series(ref)).quantiles)
    assert abs(stats.wasserstein(q, cur) - sps.wasserstein_distance(q, cur)) < TOL
    std = stats.population_std(float(np.std(ref, ddof=1)), ref.size)
    assert abs(std - float(np.std(ref))) < TOL
    assert (
        abs(stats.normalised_wasserstein(q, cur, std) - sps.wasserstein_distance(q, cur) / np.std(ref)) < TOL
    )


def _windows() -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Large windows (the fine-bin path) of every awkward shape: shifted, scaled, ties on the reference
    points, values outside the reference range, a reference with repeated quantiles, a constant reference."""
    rng = np.random.default_rng(17)
    ref = rng.normal(size=20_000)
    q = np.quantile(ref, np.linspace(0, 1, 1001))
    on_points = rng.choice(q, 30_000)  # every value equal to a reference point
    lumpy = np.quantile(np.round(rng.exponential(size=20_000), 1), np.linspace(0, 1, 1001))
    return [
        ("same", q, rng.normal(size=200_000)),
        ("shifted", q, rng.normal(0.5, 1.0, 200_000)),
        ("scaled", q, rng.normal(0.0, 3.0, 200_000)),
        ("far", q, rng.normal(40.0, 1.0, 50_000)),
        ("ties", q, np.concatenate([on_points, np.round(rng.normal(size=30_000), 2)])),
        ("lumpy", lumpy, np.round(rng.exponential(1.1, 100_000), 1)),
        ("constant", np.full(1001, 2.5), rng.normal(2.5, 1.0, 10_000)),
    ]


@pytest.mark.parametrize("case", range(7))
def test_large_windows_match_scipy_and_the_exact_path(case: int) -> None:
    name, q, cur = _windows()[case]
    edges = np.quantile(q, [0.1, 0.5, 0.9])
    fast = stats.compare_numeric(q, cur, edges=(edges,))
    exact = stats.compare_numeric(q, cur, edges=(edges,), fine_from=10**9)  # plain searchsorted
    assert abs(fast.ks - sps.ks_2samp(q, cur).statistic) < TOL, name
    assert abs(fast.wasserstein - sps.wasserstein_distance(q, cur)) < TOL * max(1.0, fast.wasserstein), name
    assert np.array_equal(fast.at_or_below_grid, exact.at_or_below_grid), name
    assert fast.at_or_below(edges).tolist() == [int(np.sum(cur <= e)) for e in edges], name
    assert abs(fast.wasserstein - exact.wasserstein) < TOL and fast.ks == exact.ks, name


def test_locate_is_searchsorted() -> None:
    rng = np.random.default_rng(8)
    grid = np.unique(np.round(rng.normal(size=500), 2))
    values = np.concatenate(
        [rng.normal(size=50_000), rng.choice(grid, 5000), [grid[0], grid[-1], -1e300, 1e300]]
    )
    right, equal = stats.locate(values, grid)
    assert np.array_equal(right, np.searchsorted(grid, values, side="right"))
    assert equal.tolist() == [int(np.sum(values == g)) for g in grid]


def test_psi_direct_formula_and_bins_match_the_profile() -> None:
    ref, cur = _data()
    profile = profile_numeric(pd.Series(ref))
    edges = np.asarray(profile.bin_edges)
    shares = stats.compare_numeric(np.asarray(profile.quantiles), cur, edges=(edges,)).bin_shares(edges)
    # the profile's own binning (bin_fractions) applied to the current values
    counts = np.bincount(np.searchsorted(edges, cur, side="left"), minlength=edges.size + 1)
    assert np.allclose(shares, counts / cur.size, atol=TOL, rtol=0)
    r = np.clip(np.asarray(profile.bin_fractions), 1e-4, None)
    c = np.clip(shares, 1e-4, None)
    expected = sum((ci - ri) * math.log(ci / ri) for ri, ci in zip(r, c, strict=True))
    assert abs(stats.psi(np.asarray(profile.bin_fractions), shares) - expected) < TOL


def test_psi_of_half_sd_shift_is_about_the_issue_figure() -> None:
    rng = np.random.default_rng(11)
    profile = profile_numeric(pd.Series(rng.normal(size=100_000)))
    cur = rng.normal(0.5, 1.0, 100_000)
    edges = np.asarray(profile.bin_edges)
    shares = stats.compare_numeric(np.asarray(profile.quantiles), cur, edges=(edges,)).bin_shares(edges)
    value = stats.psi(np.asarray(profile.bin_fractions), shares)
    assert 0.2 < value < 0.28
    # PSI alone (major from 0.25) would miss it; the rule (normalised Wasserstein >= 0.1) does not
    result = numeric_drift("x", profile, cur, DriftRules())
    assert result.psi_band == "moderate" and result.drifted and result.rule == "wasserstein >= 0.1"


def test_psi_bands() -> None:
    rules = DriftRules()
    assert [psi_band(v, rules) for v in (0.0, 0.0999, 0.1, 0.2499, 0.25, 3.0)] == [
        "none",
        "none",
        "moderate",
        "moderate",
        "major",
        "major",
    ]
    custom = DriftRules(psi_moderate=0.2, psi_major=0.5)
    assert psi_band(0.3, custom) == "moderate" and psi_band(0.5, custom) == "major"


def test_profile_based_statistics_stay_close_to_the_raw_reference() -> None:
    # the profile keeps 1,001 quantiles, not the raw rows: KS is within 1/1001 of the raw statistic and the
    # normalised Wasserstein distance within a small fraction of the 0.1 threshold
    rng = np.random.default_rng(21)
    for ref, cur in [
        (rng.normal(size=50_000), rng.normal(0.2, 1.1, 20_000)),
        (rng.lognormal(size=50_000), rng.lognormal(0.1, 1.0, 20_000)),
    ]:
        q = np.asarray(profile_numeric(pd.Series(ref)).quantiles)
        raw_ks = sps.ks_2samp(ref, cur).statistic
        assert abs(stats.ks_statistic(q, cur) - raw_ks) <= 1 / 1001 + 1e-12
        raw_wd = sps.wasserstein_distance(ref, cur) / np.std(ref)
        assert abs(stats.normalised_wasserstein(q, cur, float(np.std(ref))) - raw_wd) < 0.01


def test_categorical_statistics_match_scipy() -> None:
    ref = pd.Series(["a"] * 50 + ["b"] * 30 + ["c"] * 20)
    profile = profile_categorical(ref)
    cur = np.array(["a"] * 30 + ["b"] * 30 + ["c"] * 25 + ["z"] * 15, dtype=object)
    r, counts, unseen = stats.category_shares(cur, profile.frequencies, other=OTHER_CATEGORY)
    assert counts.tolist() == [30, 30, 25, 15]
    assert r.tolist() == [0.5, 0.3, 0.2, 0.0]
    assert unseen == pytest.approx(0.15, abs=TOL)
    assert abs(stats.jensen_shannon(r, counts / 100) - jensenshannon(r, counts / 100)) < TOL
    expected = np.clip(r, 1e-4, None)
    expected = expected / expected.sum() * 100
    chi = sps.chisquare(counts, expected)
    stat, p = stats.chi_square(r, counts)
    assert abs(stat - chi.statistic) < TOL
    assert abs(p - chi.pvalue) < TOL
    shares = counts / 100
    clipped_r, clipped_c = np.clip(r, 1e-4, None), np.clip(shares, 1e-4, None)
    expected_psi = sum((c - q) * math.log(c / q) for q, c in zip(clipped_r, clipped_c, strict=True))
    assert abs(stats.psi(r, shares) - expected_psi) < TOL
    result = feature_drift("c", profile, pa.array(list(cur) + [None] * 25), DriftRules(), total=125)
    assert result.rule == "chi2_pvalue < 0.05" and result.drifted
    assert abs(result.stats["psi"] - expected_psi) < TOL
    assert abs(result.stats["js"] - jensenshannon(r, shares)) < TOL
    assert abs(result.stats["unseen_share"] - 0.15) < TOL
    assert abs(result.stats["missing_rate_change"] - 0.2) < TOL


def test_drift_rules_switch_on_window_size() -> None:
    rng = np.random.default_rng(5)
    profile = profile_numeric(pd.Series(rng.normal(size=20_000)))
    rules = DriftRules()
    big = numeric_drift("x", profile, rng.normal(0.5, 1.0, 5000), rules)
    assert big.drifted and big.rule == "wasserstein >= 0.1" and big.psi_band in {"moderate", "major"}
    small = numeric_drift("x", profile, rng.normal(0.5, 1.0, 200), rules)
    assert small.drifted and small.rule == "ks_pvalue < 0.05"
    tiny = numeric_drift("x", profile, rng.normal(0.5, 1.0, 10), rules)
    assert tiny.status == "insufficient" and not tiny.drifted


def test_missing_values_and_absent_columns() -> None:
    rng = np.random.default_rng(2)
    profile = profile_numeric(pd.Series(rng.normal(size=1000)))
    values = rng.normal(size=2000)
    values[:500] = np.nan
    result = numeric_drift("x", profile, values, DriftRules())
    assert result.count == 1500
    assert result.stats["missing_rate"] == pytest.approx(0.25)
    assert result.stats["missing_rate_change"] == pytest.approx(0.25)
    absent = feature_drift("x", profile, None, DriftRules(), total=100)
    assert absent.status == "absent" and absent.stats["missing_rate"] == 1.0


def test_float_labels_match_integer_categories() -> None:
    profile = profile_categorical(pd.Series(np.array([0, 1, 1, 0])))
    values = category_values(pa.array([1.0, 0.0, None, 1.0]), profile.frequencies)
    assert values.tolist() == ["1", "0", "1"]
