"""What a person reads first about a window's monitoring run: its name (`monitor churn 04:10-04:25`, UTC,
with an en dash)
and its markdown description (MLflow shows it on the run's page): what was measured, the verdict and why,
the quality against the watched metric, and the retraining decision.

Called by `monitoring.job` once the window's decision is known; pure.
"""

from __future__ import annotations

from datetime import UTC, datetime

from modelloop.monitoring.config import ModelMonitorConfig
from modelloop.monitoring.measure import NO_REFERENCE, Measurement
from modelloop.monitoring.trigger import TriggerDecision
from modelloop.monitoring.window import Window

#: Between a window's start and end in a run name (an en dash).
DASH = "\u2013"
#: Drifted features named in a description (the rest are counted).
NAMED_FEATURES = 8


def _utc(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


def run_name(model: str, window: Window) -> str:
    """`monitor <model> HH:MM-HH:MM` (UTC, an en dash); with dates when the window is not within a day."""
    start, end = _utc(window.start), _utc(window.end)
    if window.length < 86400 and (start.date() == end.date() or end == end.replace(hour=0, minute=0)):
        span = f"{start:%H:%M}{DASH}{end:%H:%M}"
        if start.second or end.second:
            span = f"{start:%H:%M:%S}{DASH}{end:%H:%M:%S}"
    else:
        span = f"{start:%Y-%m-%d %H:%M}{DASH}{end:%Y-%m-%d %H:%M}"
    return f"monitor {model} {span}"


def _verdict(m: Measurement) -> str:
    if m.status == NO_REFERENCE:
        return f"**Drift not measured.** {m.no_drift_reason}"
    summary = m.summary
    if m.status != "ok" or summary is None or summary.status != "ok":
        return (
            f"**Too few rows to decide** ({m.rows.served_rows} rows, {summary.evaluated if summary else 0} "
            "features could be evaluated)."
        )
    drifted = sorted((f for f in m.features.values() if f.drifted), key=lambda f: f.name)
    names = ", ".join(f"`{f.name}`" for f in drifted[:NAMED_FEATURES])
    if len(drifted) > NAMED_FEATURES:
        names += f" and {len(drifted) - NAMED_FEATURES} more"
    head = "**Dataset drifted.**" if summary.dataset_drifted else "**Not drifted.**"
    text = (
        f"{head} {summary.drifted} of {summary.evaluated} features drifted (share "
        f"{summary.share_drifted:.2f}; the dataset drifts at {summary.rule})."
    )
    if drifted:
        rules = sorted({f.rule for f in drifted})
        text += f" Drifted: {names} ({'; '.join(rules)})."
    return text


def _quality(m: Measurement) -> str | None:
    if m.quality is None or not m.quality.labelled:
        return None
    metric = m.quality_metric
    value = m.quality.metrics.get(metric) if metric else None
    training = m.reference.test_metrics.get(metric) if m.reference is not None and metric else None
    if metric is None:
        return f"**Quality:** {m.quality.labelled} labelled rows."
    shown = f"{value:.4g}" if value is not None else "not measurable from the logged predictions"
    text = f"**Quality:** {metric} {shown} on {m.quality.labelled} labelled rows"
    text += f" (training: {training:.4g})." if training is not None else "."
    if m.quality_breached:
        text += " Below the policy's floor."
    return text


def run_description(
    model: str,
    window: Window,
    m: Measurement,
    decision: TriggerDecision,
    config: ModelMonitorConfig,
    *,
    empty_before: int = 0,
) -> str:
    """The run's markdown description (see the module docstring)."""
    start, end = window.iso()
    version = m.rows.version or "-"
    reference = (
        f" against the reference profile of training run `{m.reference.training_run_id}`"
        if m.reference is not None
        else ""
    )
    lines = [
        f"Monitoring window {start} to {end} (UTC) of model `{model}` version {version}: "
        f"{m.rows.served_rows} rows compared{reference}.",
        "",
        _verdict(m),
    ]
    if (quality := _quality(m)) is not None:
        lines += ["", quality]
    lines += ["", f"**Retraining:** {decision.decision} — {decision.detail}."]
    if decision.cause:
        lines[-1] += f" Cause `{decision.cause}`."
    if empty_before:
        lines += ["", f"{empty_before} window(s) without traffic before this one (not recorded)."]
    not_compared = m.rows.total_rows - m.rows.served_rows
    if not_compared:
        lines += ["", f"{not_compared} rows answered by other versions or routes were not compared."]
    lines += [
        "",
        "Per-feature statistics: `drift_features.json` (a table); the report with plots: `report.html`. "
        f"Rules: drift share {config.drift.drift_share:g}, p-value {config.drift.p_value:g}, "
        f"Wasserstein {config.drift.wasserstein:g}, Jensen-Shannon {config.drift.jensen_shannon:g} above "
        f"{config.drift.large_window_rows} rows.",
    ]
    return "\n".join(lines)


__all__ = ["run_description", "run_name"]
