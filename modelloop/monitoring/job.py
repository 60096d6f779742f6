"""The monitoring job: measure one model's window, record it, and maybe launch a retraining.

Called by `modelloop monitor` and, in-process, by the local platform's scheduler (`run_pass` over the
bound models every interval, with an injected `Retrainer`). `run_window` measures the window
(`monitoring.measure`: the prediction log read with bounded memory, drift against the reference profile of
the version that served it, quality from the labels that have arrived), writes one run for (model, window)
through the `MonitoringRecords` port with the metric names of DESIGN.md (`monitoring.run_content`),
replacing any earlier run of the same window, and lets `monitoring.firing` ask the trigger and launch and
record a retraining when it fires. A window without traffic is not a run: it is counted on the model's next
recorded window (`window.empty_before`, from the gap since the previous recorded window, so a CronJob that
starts afresh each time counts the same), and its outcome has no run id. A window whose version has no
reference profile is recorded with status `no_reference` and the reason in a tag. Each run has a readable
name and a markdown description (`monitoring.run_notes`), a handful of summary metrics, and the per-feature
statistics as a table artifact beside the HTML report (`monitoring.run_content`).

The registry (versions, reference profiles, training configs, the tags of the last firing) is reached
through the `ModelRegistry` port; neither port is MLflow here, so tests run the job on in-memory ones.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from modelloop.contract.errors import ModelloopError
from modelloop.contract.model_registry import ModelRegistry
from modelloop.contract.predlog import PredictionLogStore
from modelloop.monitoring.config import ModelMonitorConfig, MonitorConfig
from modelloop.monitoring.drift import DriftSummary, FeatureDrift
from modelloop.monitoring.firing import Launcher, Retraining, last_firing, settle
from modelloop.monitoring.measure import Measurement, measure
from modelloop.monitoring.quality import Quality
from modelloop.monitoring.records import MonitoringRecords, WindowRun
from modelloop.monitoring.report import ReportInput, write_report
from modelloop.monitoring.retrain import Retrainer, RetrainLaunch
from modelloop.monitoring.run_content import (
    FEATURES_TABLE_PATH,
    feature_rows,
    run_metrics,
    run_params,
    start_tags,
)
from modelloop.monitoring.run_notes import run_description, run_name
from modelloop.monitoring.trigger import TriggerDecision, WindowRecord, decide
from modelloop.monitoring.window import Window

log = logging.getLogger(__name__)

#: Bytes of feature values a window may hold in memory at once (more columns are read in further passes).
DEFAULT_MEMORY_BUDGET = 512 << 20
#: Earlier windows drawn in a report's drift-history plot.
PLOTTED_WINDOWS = 50


@dataclass(frozen=True)
class WindowOutcome:
    """What `run_window` measured, wrote and decided."""

    model: str
    window: Window
    run_id: str  # "" for an empty window (not recorded)
    status: str  # "ok" | "insufficient" | "empty" | "no_reference"
    version: str | None
    rows: int
    summary: DriftSummary | None
    features: dict[str, FeatureDrift]
    prediction: FeatureDrift | None
    quality: Quality | None
    decision: TriggerDecision
    launch: RetrainLaunch | None
    replaced: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Parts:
    """The job's collaborators for one call."""

    store: PredictionLogStore
    registry: ModelRegistry
    records: MonitoringRecords
    retrainer: Retrainer | None
    memory_budget: int


def run_window(
    model_name: str,
    window: Window,
    *,
    store: PredictionLogStore,
    registry: ModelRegistry,
    records: MonitoringRecords,
    config: ModelMonitorConfig | None = None,
    retrainer: Retrainer | None = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
) -> WindowOutcome:
    """Measure `model_name` over `window`, record it (replacing the earlier runs of this window), and launch
    a retraining through `retrainer` when the policy fires (None: never launch; the run then says the trigger
    was suppressed). A window without traffic is measured but not recorded (the outcome's `run_id` is "")."""
    parts = _Parts(store, registry, records, retrainer, memory_budget)
    return _run_window(model_name, window, parts, config or ModelMonitorConfig())


def _run_window(model_name: str, window: Window, parts: _Parts, config: ModelMonitorConfig) -> WindowOutcome:
    started = time.perf_counter()
    previous = parts.records.window_runs(model_name, window.id)
    m = measure(
        model_name,
        window,
        store=parts.store,
        registry=parts.registry,
        config=config,
        memory_budget=parts.memory_budget,
    )
    if m.status == "empty":
        log.debug("model %s window %s: no traffic, not recorded", model_name, window.id)
        return _empty_outcome(model_name, window, m)
    run_id = parts.records.start_run(model_name, window.id, start_tags(m), name=run_name(model_name, window))
    try:
        retraining = _record(
            model_name, window, m, run_id=run_id, previous=previous, parts=parts, config=config
        )
        parts.records.finish(run_id)
    except BaseException:
        parts.records.finish(run_id, failed=True)
        raise
    replaced = [run.run_id for run in previous]
    parts.records.delete_runs(replaced)
    log.info(
        "model %s version %s window %s: %s, %d rows, share drifted %s, retraining %s (%.1f s)",
        model_name,
        m.rows.version,
        window.id,
        m.status,
        m.rows.served_rows,
        f"{m.summary.share_drifted:.3g}" if m.summary else "n/a",
        retraining.decision.decision,
        time.perf_counter() - started,
    )
    return WindowOutcome(
        model=model_name,
        window=window,
        run_id=run_id,
        status=m.status,
        version=m.rows.version,
        rows=m.rows.served_rows,
        summary=m.summary,
        features=m.features,
        prediction=m.prediction,
        quality=m.quality,
        decision=retraining.decision,
        launch=retraining.launch,
        replaced=replaced,
    )


def _empty_outcome(model_name: str, window: Window, m: Measurement) -> WindowOutcome:
    from modelloop.monitoring.trigger import Decision

    return WindowOutcome(
        model=model_name,
        window=window,
        run_id="",
        status=m.status,
        version=m.rows.version,
        rows=m.rows.served_rows,
        summary=None,
        features={},
        prediction=None,
        quality=None,
        decision=TriggerDecision(Decision.INSUFFICIENT, None, "window is empty (not recorded)"),
        launch=None,
    )


def empty_before(window: Window, history: Sequence[WindowRecord]) -> int:
    """Windows of `window`'s length between the model's previous recorded window and this one: they had no
    traffic (or no monitor ran) and are not recorded. 0 without a previous window."""
    ends = [r.end for r in history if 0 < r.end <= window.start]
    if not ends:
        return 0
    return max(0, round((window.start - max(ends)) / window.length))


def _record(
    model_name: str,
    window: Window,
    m: Measurement,
    *,
    run_id: str,
    previous: Sequence[WindowRun],
    parts: _Parts,
    config: ModelMonitorConfig,
) -> Retraining:
    """Fill the window's run: its metrics and params, the retraining decision, the report."""
    records = parts.records
    history = [r for r in records.history(model_name) if r.window_id != window.id]
    skipped = empty_before(window, history)
    params = run_params(model_name, window, m, config)
    metrics = run_metrics(m, window, empty_before=skipped)
    records.log(run_id, metrics=metrics, params=params, timestamp_ms=int(window.end * 1000))
    rows = feature_rows(m)
    if rows:
        records.log_table(run_id, FEATURES_TABLE_PATH, rows)
    current = WindowRecord(
        window_id=window.id,
        end=window.end,
        version=m.rows.version,
        status=m.status,
        rows=m.rows.served_rows,
        share_drifted=m.share_drifted,
        quality_breached=m.quality_breached,
    )
    last = last_firing(parts.registry, model_name)
    decision = decide(config.retrain, current, history, drift_share=config.drift.drift_share, last=last)
    launcher = Launcher(retrainer=parts.retrainer, registry=parts.registry, tracking_uri=records.tracking_uri)
    retraining = settle(
        model_name, decision, m=m, run_id=run_id, window_end=window.end, previous=previous, launcher=launcher
    )
    records.log(run_id, tags=retraining.tags)
    records.describe(
        run_id,
        run_description(model_name, window, m, retraining.decision, config, empty_before=skipped),
    )
    plotted = [(r.end, r.share_drifted, r.status) for r in history[:PLOTTED_WINDOWS]]
    report = _report_input(
        model_name, window, m, history=plotted, decision=retraining.decision, config=config
    )
    with tempfile.TemporaryDirectory(prefix="modelloop-report-") as tmp:
        write_report(Path(tmp), report)
        records.log_artifacts(run_id, Path(tmp))
    return retraining


def _report_input(
    model_name: str,
    window: Window,
    m: Measurement,
    *,
    history: list[tuple[float, float | None, str]],
    decision: TriggerDecision,
    config: ModelMonitorConfig,
) -> ReportInput:
    """What the window's report shows; `history` holds the earlier windows, the current one is added."""
    return ReportInput(
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
        history=sorted([*history, (window.end, m.share_drifted, m.status)]),
        drift_share=config.drift.drift_share,
        decision=str(decision.decision),
        decision_detail=decision.detail,
        quality_metric=m.quality_metric,
        no_drift_reason=m.no_drift_reason,
        large_window_rows=config.drift.large_window_rows,
    )


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
    registry: ModelRegistry,
    records: MonitoringRecords,
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
    parts = _Parts(store, registry, records, retrainer, memory_budget)
    window = Window.last_complete(length, time.time() if now is None else now)
    result = PassResult(outcomes=[], skipped=[], failures={})
    for name in model_names:
        try:
            if skip_recorded and records.window_recorded(name, window.id):
                result.skipped.append(name)
                continue
            result.outcomes.append(_run_window(name, window, parts, config.for_model(name)))
        except ModelloopError as exc:
            log.error("model %s window %s: monitoring failed: %s", name, window.id, exc)
            result.failures[name] = str(exc)
    return result


__all__ = ["DEFAULT_MEMORY_BUDGET", "PassResult", "WindowOutcome", "empty_before", "run_pass", "run_window"]
