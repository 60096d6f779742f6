"""What a window's monitoring run holds: its metrics (the names of DESIGN.md), its params (the window, the
version, the rules that decided) and the tags it starts with.

Called by `monitoring.job` with a `monitoring.measure.Measurement`; pure. The names read back by
`MonitoringRecords.history` are the constants of `monitoring.records`.
"""

from __future__ import annotations

import re

import numpy as np

from modelloop.contract.registry import TAG_MONITOR_STATUS, TAG_QUALITY_BREACHED
from modelloop.monitoring.config import ModelMonitorConfig
from modelloop.monitoring.measure import Measurement
from modelloop.monitoring.records import (
    METRIC_SHARE_DRIFTED,
    METRIC_WINDOW_END,
    METRIC_WINDOW_ROWS,
    PARAM_MODEL_VERSION,
)
from modelloop.monitoring.window import Window

_BAD_KEY_CHARS = re.compile(r"[^A-Za-z0-9_\-. /]")


def metric_key(*parts: str) -> str:
    """A metric name from parts joined by dots; characters MLflow refuses become `_`."""
    return ".".join(_BAD_KEY_CHARS.sub("_", p) for p in parts)


def start_tags(m: Measurement) -> dict[str, str]:
    """The tags a window's run is created with (besides the kind, model and window)."""
    return {TAG_MONITOR_STATUS: m.status, TAG_QUALITY_BREACHED: "1" if m.quality_breached else "0"}


def run_metrics(m: Measurement, window: Window) -> dict[str, float]:
    """Every finite metric of the window's run."""
    out: dict[str, float] = {
        "window.start": window.start,
        METRIC_WINDOW_END: window.end,
        METRIC_WINDOW_ROWS: float(m.rows.served_rows),
        "window.rows_total": float(m.rows.total_rows),
        "window.rows_not_compared": float(m.rows.total_rows - m.rows.served_rows),
    }
    if m.summary is not None:
        out["drift.n_evaluated"] = float(m.summary.evaluated)
        if m.status == "ok":  # an insufficient window has no verdict (not a share of 0)
            out[METRIC_SHARE_DRIFTED] = m.summary.share_drifted
            out["drift.n_drifted"] = float(m.summary.drifted)
            out["drift.dataset_drifted"] = float(m.summary.dataset_drifted)
    for name, f in m.features.items():
        for stat, value in f.stats.items():
            out[metric_key("drift", stat, name)] = value
        out[metric_key("drift", "drifted", name)] = float(f.drifted)
    if m.prediction is not None:
        for stat, value in m.prediction.stats.items():
            out[metric_key("prediction", "drift", stat)] = value
        out["prediction.drift.drifted"] = float(m.prediction.drifted)
    if m.quality is not None:
        out["quality.labelled"] = float(m.quality.labelled)
        out["quality.unusable_labels"] = float(m.quality.unusable_labels)
        for name, value in m.quality.metrics.items():
            out[metric_key("quality", name)] = value
    if m.reference is not None:
        for name, value in m.reference.test_metrics.items():
            out[metric_key("quality", "training", name)] = value
    return {k: v for k, v in out.items() if np.isfinite(v)}


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


__all__ = ["metric_key", "run_metrics", "run_params", "start_tags"]
