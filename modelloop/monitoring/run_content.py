"""What a window's monitoring run holds: a handful of summary metrics (the names of DESIGN.md), the
per-feature statistics as a table (`feature_rows`, logged at `FEATURES_TABLE_PATH`: one row per feature
keeps the runs table readable, where one metric per feature and statistic made ~240 metrics a run), its
params (the window, the version, the rules that decided), its name and description (`monitoring.run_notes`)
and the tags it starts with.

Called by `monitoring.job` with a `monitoring.measure.Measurement`; pure. The names read back by
`MonitoringRecords.history` are the constants of `monitoring.records`.
"""

from __future__ import annotations

import re

import numpy as np

from modelloop.contract.registry import TAG_MONITOR_NO_DRIFT_REASON, TAG_MONITOR_STATUS, TAG_QUALITY_BREACHED
from modelloop.monitoring.config import ModelMonitorConfig
from modelloop.monitoring.measure import Measurement
from modelloop.monitoring.records import (
    METRIC_EMPTY_BEFORE,
    METRIC_SHARE_DRIFTED,
    METRIC_WINDOW_END,
    METRIC_WINDOW_ROWS,
    PARAM_MODEL_VERSION,
)
from modelloop.monitoring.window import Window

_BAD_KEY_CHARS = re.compile(r"[^A-Za-z0-9_\-. /]")
#: The per-feature table artifact of a window's run (MLflow's table format: shown as a table in the UI).
FEATURES_TABLE_PATH = "drift_features.json"


def metric_key(*parts: str) -> str:
    """A metric name from parts joined by dots; characters MLflow refuses become `_`."""
    return ".".join(_BAD_KEY_CHARS.sub("_", p) for p in parts)


def start_tags(m: Measurement) -> dict[str, str]:
    """The tags a window's run is created with (besides the kind, model and window); without a reference
    profile, the reason drift was not measured."""
    tags = {TAG_MONITOR_STATUS: m.status, TAG_QUALITY_BREACHED: "1" if m.quality_breached else "0"}
    if m.no_drift_reason:
        tags[TAG_MONITOR_NO_DRIFT_REASON] = m.no_drift_reason[:5000]
    return tags


def run_metrics(m: Measurement, window: Window, *, empty_before: int = 0) -> dict[str, float]:
    """The handful of summary metrics of the window's run (per-feature statistics go to `feature_rows`)."""
    out: dict[str, float] = {
        "window.start": window.start,
        METRIC_WINDOW_END: window.end,
        METRIC_WINDOW_ROWS: float(m.rows.served_rows),
        "window.rows_total": float(m.rows.total_rows),
        "window.rows_not_compared": float(m.rows.total_rows - m.rows.served_rows),
        METRIC_EMPTY_BEFORE: float(empty_before),
    }
    if m.summary is not None:
        out["drift.n_evaluated"] = float(m.summary.evaluated)
        if m.status == "ok":  # an insufficient window has no verdict (not a share of 0)
            out[METRIC_SHARE_DRIFTED] = m.summary.share_drifted
            out["drift.n_drifted"] = float(m.summary.drifted)
            out["drift.dataset_drifted"] = float(m.summary.dataset_drifted)
    if m.prediction is not None:
        for stat, value in m.prediction.stats.items():
            out[metric_key("prediction", "drift", stat)] = value
        out["prediction.drift.drifted"] = float(m.prediction.drifted)
    if m.quality is not None:
        out["quality.labelled"] = float(m.quality.labelled)
        out["quality.unusable_labels"] = float(m.quality.unusable_labels)
        for name, value in m.quality.metrics.items():
            out[metric_key("quality", name)] = value
    watched = m.quality_metric
    if m.reference is not None and watched and watched in m.reference.test_metrics:
        out[metric_key("quality", "training", watched)] = m.reference.test_metrics[watched]
    return {k: v for k, v in out.items() if np.isfinite(v)}


#: Columns of the per-feature table, in order (statistics a feature's kind lacks are left empty).
FEATURE_COLUMNS = (
    "feature",
    "kind",
    "status",
    "drifted",
    "decided_by",
    "value",
    "threshold",
    "values",
    "missing_rate",
    "missing_rate_change",
    "wasserstein",
    "ks_stat",
    "ks_pvalue",
    "js",
    "chi2",
    "chi2_pvalue",
    "unseen_share",
    "psi",
)


def feature_rows(m: Measurement) -> list[dict[str, object]]:
    """One row per feature (and one for the prediction): the verdict, the statistic that decided, its value
    and threshold, and every other statistic (the table artifact at `FEATURES_TABLE_PATH`)."""
    out: list[dict[str, object]] = []
    named = sorted(m.features.values(), key=lambda f: (not f.drifted, f.status != "ok", f.name))
    for f in [*named, *([m.prediction] if m.prediction is not None else [])]:
        row: dict[str, object] = {
            "feature": f.name if f is not m.prediction else "(prediction)",
            "kind": f.kind,
            "status": f.status,
            "drifted": f.drifted,
            "decided_by": f.rule if f.status == "ok" else f"not evaluated: {f.rule}",
            "value": _finite(f.deciding_value),
            "threshold": f.threshold,
            "values": f.count,
        }
        for column in FEATURE_COLUMNS[8:]:
            row[column] = _finite(f.stats.get(column))
        out.append(row)
    return out


def _finite(value: float | None) -> float | None:
    return value if value is not None and np.isfinite(value) else None


def run_params(model_name: str, window: Window, m: Measurement, config: ModelMonitorConfig) -> dict[str, str]:
    """The window, the version, the reference run and every rule and policy value that applied."""
    start_iso, end_iso = window.iso()
    params = {
        "model_name": model_name,
        PARAM_MODEL_VERSION: m.rows.version or "",
        "window_id": window.id,
        "window_start": start_iso,
        "window_end": end_iso,
        "rows": str(m.rows.served_rows),
        "reference_run_id": m.reference.training_run_id if m.reference else "",
        "quality_metric": m.quality_metric or "",
        # the rules that decided: per feature (distance above large_window_rows, test below) and dataset
        "drift_rules_applied": ", ".join(
            sorted({f.rule for f in m.features.values() if f.status == "ok"})
            + ([m.summary.rule] if m.summary else [])
        ),
        "rows_not_compared_by_version_route": ",".join(f"{k}={v}" for k, v in sorted(m.rows.others.items())),
    }
    for key, value in config.drift.model_dump().items():
        params[f"drift.{key}"] = str(value)
    for key, value in config.retrain.model_dump().items():
        params[f"retrain.{key}"] = str(value)
    return params


__all__ = [
    "FEATURES_TABLE_PATH",
    "FEATURE_COLUMNS",
    "feature_rows",
    "metric_key",
    "run_metrics",
    "run_params",
    "start_tags",
]
