"""The HTML report of a window: its plots, one verdict per feature, the watched quality metric, and nothing
dropped silently."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from modelloop.contract.profile import build_profile
from modelloop.monitoring.config import DriftRules
from modelloop.monitoring.drift import feature_drift, summarise
from modelloop.monitoring.report import MAX_FEATURE_PLOTS, ReportInput, write_report


def _report(tmp_path: Path, shifted: int, *, watched: str | None = None) -> tuple[str, dict[str, object]]:
    rng = np.random.default_rng(4)
    names = [f"x{i:02d}" for i in range(20)]
    profile = build_profile(pd.DataFrame(rng.normal(size=(3000, 20)), columns=names), None, task="regression")
    current = rng.normal(size=(2000, 20))
    current[:, :shifted] += 1.0
    rules = DriftRules()
    features = {
        n: feature_drift(n, profile.features[n], pa.array(current[:, i]), rules, total=2000)
        for i, n in enumerate(names)
    }
    summary = summarise(features, rules)
    history = [(1000.0 * i, 0.05 * i, "ok") for i in range(5)] + [(5000.0, None, "empty")]
    write_report(
        tmp_path,
        ReportInput(
            model="m",
            version="3",
            window_id="w",
            window_iso=("a", "b"),
            status="ok",
            rows=2000,
            features=features,
            prediction=None,
            summary=summary,
            quality={"accuracy": 0.9},
            training_quality={"accuracy": 0.95},
            labelled=10,
            history=history,
            drift_share=0.5,
            decision="not_persistent",
            decision_detail="window not drifted",
            quality_metric=watched,
        ),
    )
    page = (tmp_path / "report.html").read_text()
    return page, json.loads((tmp_path / "drift.json").read_text())


def test_report_plots_and_tables(tmp_path: Path) -> None:
    page, payload = _report(tmp_path, shifted=3)
    assert (tmp_path / "drift_history.png").read_bytes().startswith(b"\x89PNG")
    assert page.count("data:image/png;base64,") == 2  # drift history, distributions of drifted features
    assert "3 of 20 features drifted" in page and "not drifted" in page
    assert "most drifted of" not in page
    # one verdict per feature, the comparison that decided it: no PSI band beside it to contradict it
    assert page.count("<td>drifted: wasserstein ") == 3 and page.count("<td>not drifted: wasserstein ") == 17
    assert "PSI band" not in page and "<td>major</td>" not in page
    features = payload["features"]
    assert isinstance(features, dict) and len(features) == 20
    assert sorted(n for n, f in features.items() if f["drifted"]) == ["x00", "x01", "x02"]


def test_report_says_when_plots_are_capped(tmp_path: Path) -> None:
    page, _ = _report(tmp_path, shifted=15)
    assert f"The {MAX_FEATURE_PLOTS} most drifted of 15 drifted features are plotted" in page
    assert "DRIFTED" in page


def test_the_quality_table_shows_the_watched_metric_even_when_it_cannot_be_measured(tmp_path: Path) -> None:
    page, payload = _report(tmp_path, shifted=0, watched="roc_auc")
    assert "<td>roc_auc (watched)</td><td>not measurable from the logged predictions</td>" in page
    assert "<td>accuracy</td><td>0.9</td><td>0.95</td>" in page
    assert payload["quality_metric"] == "roc_auc"
