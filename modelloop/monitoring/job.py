"""The monitoring job: measure one model's window, write it to MLflow, and maybe launch a retraining.

Called by `modelloop monitor` and, in-process, by the local platform's scheduler (`run_pass` over the
bound models every interval, with an injected `Retrainer`). `run_window` reads the window from the
prediction log (bounded memory, `modelloop.monitoring.window`), compares it with the reference profile of the
version that served it (`monitoring.drift`), joins the labels that have arrived (`monitoring.quality`),
writes one MLflow run for (model, window) with the metric names of DESIGN.md (replacing an earlier run of
the same window), asks the trigger (`monitoring.trigger`), and launches and records a retraining when it
fires. A window without traffic is recorded too, with status `empty`.

Re-running a window whose run launched a retraining carries that record (the `modelloop.retrain.*` tags)
over to the new run, adds `modelloop.retrain.replaced_run` (the id the training run's `--triggered-by`
names) and points the registry's tags at the new run.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from modelloop.contract.errors import ModelloopError
from modelloop.contract.predlog import PredictionLogStore
from modelloop.contract.registry import (
    TAG_MONITOR_STATUS,
    TAG_RETRAIN_CAUSE,
    TAG_RETRAIN_DECISION,
    TAG_RETRAIN_FIRED_AT,
    TAG_RETRAIN_MONITORING_RUN,
)
from modelloop.monitoring.config import ModelMonitorConfig, MonitorConfig
from modelloop.monitoring.drift import DriftSummary, FeatureDrift, feature_drift, summarise
from modelloop.monitoring.quality import Quality, breached, join_labels, quality
from modelloop.monitoring.report import ReportInput, write_report
from modelloop.monitoring.retrain import Retrainer, RetrainLaunch, RetrainRequest
from modelloop.monitoring.tracking import TAG_QUALITY_BREACHED, MonitoringTracker, Reference, metric_key
from modelloop.monitoring.trigger import Decision, TriggerDecision, WindowRecord, decide
from modelloop.monitoring.window import Window, WindowReader, WindowRows

log = logging.getLogger(__name__)

#: Bytes of feature values a window may hold in memory at once (more columns are read in further passes).
DEFAULT_MEMORY_BUDGET = 512 << 20


@dataclass(frozen=True)
class WindowOutcome:
    """What `run_window` measured, wrote and decided."""

    model: str
    window: Window
    run_id: str
    status: str  # "ok" | "insufficient" | "empty"
    version: str | None
    rows: int
    summary: DriftSummary | None
    features: dict[str, FeatureDrift]
    prediction: FeatureDrift | None
    quality: Quality | None
    decision: TriggerDecision
    launch: RetrainLaunch | None
    replaced: list[str] = field(default_factory=list)


@dataclass
class _Measured:
    status: str
    rows: WindowRows
    reference: Reference | None = None
    features: dict[str, FeatureDrift] = field(default_factory=dict)
    prediction: FeatureDrift | None = None
    summary: DriftSummary | None = None
    quality: Quality | None = None
    quality_metric: str | None = None
    quality_breached: bool = False


def _measure(
    model_name: str,
    window: Window,
    *,
    store: PredictionLogStore,
    tracker: MonitoringTracker,
    config: ModelMonitorConfig,
    memory_budget: int,
) -> _Measured:
    rules, policy = config.drift, config.retrain
    reader = WindowReader(store, model_name, window, memory_budget=memory_budget)
    rows = reader.first_pass()
    if rows.total_rows == 0 or rows.version is None:
        return _Measured("empty", rows)
    ref = tracker.reference(model_name, rows.version)
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
    labels = store.read_feedback(since=window.start, model_name=model_name)
    positions, matched = join_labels(rows.request_ids, labels)
    preds = np.asarray(rows.predictions.take(pa.array(positions, pa.int64())).to_numpy(zero_copy_only=False))
    measured_quality = quality(ref.profile.task, preds, matched)
    metric = policy.quality_metric or ref.metric
    value = measured_quality.metrics.get(metric) if metric else None
    watched = policy.quality_floor is not None or policy.quality_ceiling is not None
    if watched and value is None and measured_quality.labelled:
        # e.g. roc_auc when the log holds predicted labels, not scores: say so, the floor cannot fire
        log.warning(
            "model %s window %s: quality metric %s cannot be measured from the logged predictions "
            "(measured: %s); set retrain.quality_metric",
            model_name,
            window.id,
            metric,
            sorted(measured_quality.metrics),
        )
    is_breached = measured_quality.labelled >= policy.min_labels and breached(
        value, floor=policy.quality_floor, ceiling=policy.quality_ceiling
    )
    return _Measured(status, rows, ref, features, prediction, summary, measured_quality, metric, is_breached)


def _metrics(m: _Measured, window: Window) -> dict[str, float]:
    out: dict[str, float] = {
        "window.start": window.start,
        "window.end": window.end,
        "window.rows": float(m.rows.served_rows),
        "window.rows_total": float(m.rows.total_rows),
        "window.rows_not_compared": float(m.rows.total_rows - m.rows.served_rows),
    }
    if m.summary is not None:
        out["drift.n_evaluated"] = float(m.summary.evaluated)
        if m.status == "ok":  # an insufficient window has no verdict (not a share of 0)
            out["drift.share_drifted"] = m.summary.share_drifted
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


def _params(model_name: str, window: Window, m: _Measured, config: ModelMonitorConfig) -> dict[str, str]:
    start_iso, end_iso = window.iso()
    params = {
        "model_name": model_name,
        "model_version": m.rows.version or "",
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


def run_window(
    model_name: str,
    window: Window,
    *,
    store: PredictionLogStore,
    tracker: MonitoringTracker,
    config: ModelMonitorConfig | None = None,
    retrainer: Retrainer | None = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
) -> WindowOutcome:
    """Measure `model_name` over `window`, record it in MLflow (replacing an earlier run of this window),
    and launch a retraining through `retrainer` when the policy fires (None: never launch; the run then
    says the trigger was suppressed)."""
    config = config or ModelMonitorConfig()
    started = time.perf_counter()
    previous = tracker.window_run_tags(model_name, window.id)
    replaced = list(previous)
    m = _measure(model_name, window, store=store, tracker=tracker, config=config, memory_budget=memory_budget)
    run_id = tracker.start_run(
        model_name,
        window.id,
        {TAG_MONITOR_STATUS: m.status, TAG_QUALITY_BREACHED: "1" if m.quality_breached else "0"},
    )
    try:
        tracker.log(
            run_id,
            metrics=_metrics(m, window),
            params=_params(model_name, window, m, config),
            timestamp_ms=int(window.end * 1000),
        )
        current = WindowRecord(
            window.id,
            window.end,
            m.rows.version,
            m.status,
            m.rows.served_rows,
            m.summary.share_drifted if m.summary and m.status == "ok" else None,
            m.quality_breached,
        )
        history = [r for r in tracker.history(model_name) if r.window_id != window.id]
        last = tracker.last_firing(model_name) if m.status != "empty" else None
        decision = decide(config.retrain, current, history, drift_share=config.drift.drift_share, last=last)
        launch = None
        if decision.fire:
            decision, launch = _fire(
                model_name, decision, m=m, run_id=run_id, window=window, tracker=tracker, retrainer=retrainer
            )
        tags = {
            TAG_RETRAIN_DECISION: str(decision.decision),
            "modelloop.retrain.detail": decision.detail[:5000],
        }
        if decision.cause:
            tags[TAG_RETRAIN_CAUSE] = decision.cause
        if launch is not None:
            tags.update({f"modelloop.retrain.{k}": v for k, v in launch.details.items()})
            tags["modelloop.retrain.launched"] = launch.description[:5000]
        elif fired_before := _fired_run(previous):
            # this window fired before: its run is replaced, the record of the firing is carried over
            old_id, old_tags = fired_before
            tags = {k: v for k, v in old_tags.items() if k.startswith("modelloop.retrain.")}
            tags["modelloop.retrain.rerun_decision"] = str(decision.decision)
            tags["modelloop.retrain.replaced_run"] = old_tags.get("modelloop.retrain.replaced_run", old_id)
            tracker.repoint_firing(model_name, m.rows.version, old_id, run_id)
        tracker.log(run_id, tags=tags)
        plot_history = sorted(
            [(r.end, r.share_drifted, r.status) for r in history[:50]]
            + [(window.end, current.share_drifted, m.status)]
        )
        with tempfile.TemporaryDirectory(prefix="modelloop-report-") as tmp:
            write_report(
                Path(tmp),
                ReportInput(
                    model=model_name,
                    version=m.rows.version,
                    window_id=window.id,
                    window_iso=window.iso(),
                    status=m.status,
                    rows=m.rows.served_rows,
                    features=m.features,
                    prediction=m.prediction,
                    summary=m.summary,
                    quality=m.quality.metrics if m.quality else {},
                    training_quality=m.reference.test_metrics if m.reference else {},
                    labelled=m.quality.labelled if m.quality else 0,
                    history=plot_history,
                    drift_share=config.drift.drift_share,
                    decision=str(decision.decision),
                    decision_detail=decision.detail,
                ),
            )
            tracker.log_artifacts(run_id, Path(tmp))
        tracker.finish(run_id)
    except BaseException:
        tracker.finish(run_id, failed=True)
        raise
    tracker.delete_runs(replaced)
    log.info(
        "model %s version %s window %s: %s, %d rows, share drifted %s, retraining %s (%.1f s)",
        model_name,
        m.rows.version,
        window.id,
        m.status,
        m.rows.served_rows,
        f"{m.summary.share_drifted:.3g}" if m.summary else "n/a",
        decision.decision,
        time.perf_counter() - started,
    )
    return WindowOutcome(
        model_name,
        window,
        run_id,
        m.status,
        m.rows.version,
        m.rows.served_rows,
        m.summary,
        m.features,
        m.prediction,
        m.quality,
        decision,
        launch,
        replaced,
    )


def _fired_run(previous: dict[str, dict[str, str]]) -> tuple[str, dict[str, str]] | None:
    for run_id, tags in previous.items():
        if tags.get(TAG_RETRAIN_DECISION) == str(Decision.FIRED):
            return run_id, tags
    return None


def _fire(
    model_name: str,
    decision: TriggerDecision,
    *,
    m: _Measured,
    run_id: str,
    window: Window,
    tracker: MonitoringTracker,
    retrainer: Retrainer | None,
) -> tuple[TriggerDecision, RetrainLaunch | None]:
    assert m.reference is not None and decision.cause is not None
    if retrainer is None:
        return TriggerDecision(
            Decision.SUPPRESSED, decision.cause, f"{decision.detail}; retraining is off"
        ), None
    try:
        config_text = tracker.training_config(m.reference)
        launch = retrainer.launch(
            RetrainRequest(
                model_name=model_name,
                model_version=m.reference.version,
                training_run_id=m.reference.training_run_id,
                config_text=config_text,
                tracking_uri=tracker.tracking_uri,
                monitoring_run_id=run_id,
                cause=decision.cause,
            )
        )
    except ModelloopError as exc:
        log.error("model %s: retraining could not be launched: %s", model_name, exc)
        return TriggerDecision(
            Decision.LAUNCH_FAILED, decision.cause, f"{decision.detail}; launch failed: {exc}"
        ), None
    tracker.record_firing(
        model_name,
        m.reference.version,
        {
            TAG_RETRAIN_CAUSE: decision.cause,
            TAG_RETRAIN_FIRED_AT: repr(window.end),
            TAG_RETRAIN_MONITORING_RUN: run_id,
        },
    )
    return decision, launch


@dataclass(frozen=True)
class PassResult:
    """One monitoring pass: the windows measured, those skipped as already recorded, the failures."""

    outcomes: list[WindowOutcome]
    skipped: list[str]
    failures: dict[str, str]


def run_pass(
    model_names: Sequence[str],
    *,
    length: float,
    store: PredictionLogStore,
    tracker: MonitoringTracker,
    config: MonitorConfig | None = None,
    retrainer: Retrainer | None = None,
    now: float | None = None,
    skip_recorded: bool = False,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
) -> PassResult:
    """Measure every model over the last complete window of `length` seconds ending at or before `now`.

    One model's failure is logged and reported in the result; the others still run. With `skip_recorded`,
    a window that already has a finished run is left alone (a scheduler ticking faster than the window
    length); one whose run failed is measured again."""
    config = config or MonitorConfig()
    window = Window.last_complete(length, time.time() if now is None else now)
    outcomes, skipped, failures = [], [], {}
    for name in model_names:
        try:
            if skip_recorded and tracker.window_recorded(name, window.id):
                skipped.append(name)
                continue
            outcomes.append(
                run_window(
                    name,
                    window,
                    store=store,
                    tracker=tracker,
                    config=config.for_model(name),
                    retrainer=retrainer,
                    memory_budget=memory_budget,
                )
            )
        except ModelloopError as exc:
            log.error("model %s window %s: monitoring failed: %s", name, window.id, exc)
            failures[name] = str(exc)
    return PassResult(outcomes, skipped, failures)


__all__ = ["DEFAULT_MEMORY_BUDGET", "PassResult", "WindowOutcome", "run_pass", "run_window"]
