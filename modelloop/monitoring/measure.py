"""Measuring one model's window: read it from the prediction log, compare it with the reference profile of the
version that served it (drift), and join the labels that have arrived (quality).

Called by `monitoring.job.run_window`; writes nothing. Memory stays bounded: the window is read column by
column (`monitoring.window.WindowReader`). A window without traffic measures as `empty`; one with fewer rows
than the drift rules need (or no feature that could be evaluated) as `insufficient`; one whose version has no
readable reference profile (a version logged outside modelloop and not yet profiled) as `no_reference`, with
the reason in `no_drift_reason` (said in one warning per version and process, and in a tag of the run).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from modelloop.contract.model_registry import ModelRegistry
from modelloop.contract.predlog import PredictionLogStore
from modelloop.monitoring.config import DriftRules, ModelMonitorConfig, RetrainPolicy
from modelloop.monitoring.drift import DriftSummary, FeatureDrift, feature_drift, summarise
from modelloop.monitoring.quality import Quality, breached, join_labels, quality
from modelloop.monitoring.reference import MissingProfileError, Reference, read_reference
from modelloop.monitoring.window import Window, WindowReader, WindowRows

log = logging.getLogger(__name__)

#: The status of a window whose version has no readable reference profile.
NO_REFERENCE = "no_reference"
#: (model, version) pairs whose missing profile this process has already warned about.
_warned: set[tuple[str, str]] = set()


@dataclass(frozen=True)
class Drift:
    """The window's drift against the reference profile; `status` is "ok" or "insufficient"."""

    status: str
    features: dict[str, FeatureDrift]
    prediction: FeatureDrift | None
    summary: DriftSummary


@dataclass(frozen=True)
class QualityCheck:
    """The window's quality from the labels that arrived, and whether the policy's floor (ceiling) broke."""

    quality: Quality
    metric: str | None  # the metric watched: the policy's, else the training metric
    breached: bool


@dataclass(frozen=True)
class Measurement:
    """Everything measured about one window; `reference` is None for an empty window and without a profile."""

    status: str  # "ok" | "insufficient" | "empty" | "no_reference"
    rows: WindowRows
    reference: Reference | None = None
    features: dict[str, FeatureDrift] = field(default_factory=dict)
    prediction: FeatureDrift | None = None
    summary: DriftSummary | None = None
    quality: Quality | None = None
    quality_metric: str | None = None
    quality_breached: bool = False
    no_drift_reason: str | None = None  # why drift was not measured (status no_reference)

    @property
    def share_drifted(self) -> float | None:
        """The share of drifted features; None when the window has no verdict (empty or insufficient)."""
        return self.summary.share_drifted if self.summary is not None and self.status == "ok" else None


def measure(
    model_name: str,
    window: Window,
    *,
    store: PredictionLogStore,
    registry: ModelRegistry,
    config: ModelMonitorConfig,
    memory_budget: int,
) -> Measurement:
    """Read `model_name`'s window; measure its drift and quality against the serving version's reference."""
    reader = WindowReader(store, model_name, window, memory_budget=memory_budget)
    rows = reader.first_pass()
    if rows.total_rows == 0 or rows.version is None:
        return Measurement(status="empty", rows=rows)
    try:
        ref = read_reference(registry, model_name, rows.version)
    except MissingProfileError as exc:
        return Measurement(
            status=NO_REFERENCE, rows=rows, no_drift_reason=no_drift_reason(model_name, rows, exc)
        )
    drift = measure_drift(model_name, reader, rows, ref, config.drift)
    check = check_quality(model_name, window, store=store, rows=rows, reference=ref, policy=config.retrain)
    return Measurement(
        status=drift.status,
        rows=rows,
        reference=ref,
        features=drift.features,
        prediction=drift.prediction,
        summary=drift.summary,
        quality=check.quality,
        quality_metric=check.metric,
        quality_breached=check.breached,
    )


def no_drift_reason(model_name: str, rows: WindowRows, exc: Exception) -> str:
    """Why the window's drift cannot be measured, and what attaches a profile; warned once per version."""
    version = rows.version or "?"
    reason = (
        f"{exc}; drift cannot be measured without one: attach it with "
        f"`modelloop profile --model {model_name}/{version} --data FILE`"
    )
    if (model_name, version) not in _warned:
        _warned.add((model_name, version))
        log.warning("model %s version %s: %s", model_name, version, reason)
    return reason


def measure_drift(
    model_name: str, reader: WindowReader, rows: WindowRows, ref: Reference, rules: DriftRules
) -> Drift:
    """Each profiled feature's drift (and the prediction's), and the dataset's verdict."""
    n = rows.served_rows
    features = {
        name: feature_drift(name, ref.profile.features[name], column, rules, total=n)
        for name, column in reader.columns(rows, list(ref.profile.features))
    }
    extra = sorted(set(rows.feature_columns) - set(ref.profile.features))
    if extra:
        log.warning(
            "model %s: %d logged column(s) not in the reference profile: %s", model_name, len(extra), extra
        )
    prediction = None
    if ref.profile.prediction is not None:
        prediction = feature_drift("prediction", ref.profile.prediction, rows.predictions, rules, total=n)
    summary = summarise(features, rules)
    status = "ok" if n >= rules.min_rows and summary.status == "ok" else "insufficient"
    return Drift(status=status, features=features, prediction=prediction, summary=summary)


def check_quality(
    model_name: str,
    window: Window,
    *,
    store: PredictionLogStore,
    rows: WindowRows,
    reference: Reference,
    policy: RetrainPolicy,
) -> QualityCheck:
    """The quality of the window's predictions against the labels recorded since the window started."""
    labels = store.read_feedback(since=window.start, model_name=model_name)
    positions, matched = join_labels(rows.request_ids, labels)
    preds = np.asarray(rows.predictions.take(pa.array(positions, pa.int64())).to_numpy(zero_copy_only=False))
    measured = quality(reference.profile.task, preds, matched)
    metric = policy.quality_metric or reference.metric
    value = measured.metrics.get(metric) if metric else None
    watched = policy.quality_floor is not None or policy.quality_ceiling is not None
    if watched and value is None and measured.labelled:
        # e.g. roc_auc when the log holds predicted labels, not scores: say so, the floor cannot fire
        log.warning(
            "model %s window %s: quality metric %s cannot be measured from the logged predictions "
            "(measured: %s); set retrain.quality_metric",
            model_name,
            window.id,
            metric,
            sorted(measured.metrics),
        )
    is_breached = measured.labelled >= policy.min_labels and breached(
        value, floor=policy.quality_floor, ceiling=policy.quality_ceiling
    )
    return QualityCheck(quality=measured, metric=metric, breached=is_breached)


__all__ = [
    "NO_REFERENCE",
    "Drift",
    "Measurement",
    "QualityCheck",
    "check_quality",
    "measure",
    "measure_drift",
    "no_drift_reason",
]
