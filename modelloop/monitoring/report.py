"""The HTML report of one monitoring window, with its plots, written into a folder that becomes artifacts.

Called by `monitoring.job`. Writes `report.html` (self-contained: plots inlined as PNG), `drift_history.png`
(share of drifted features over the model's recent windows, with the rule's threshold) and `drift.json`
(every statistic, for tools). Plots: reference vs current distribution for each drifted feature (the most
drifted first, at most `MAX_FEATURE_PLOTS`) and for the prediction, one panel each.

One verdict per feature: the table shows the rule that decided, the statistic it compared, its value and
threshold, and the verdict they give; PSI (which decides nothing) is left to `drift.json` and the run's
per-feature table. The quality table always has a row for the watched metric, saying so when the logged
predictions cannot measure it (e.g. ROC AUC from predicted labels).
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from modelloop.monitoring.drift import DriftSummary, FeatureDrift

MAX_FEATURE_PLOTS = 12


@dataclass(frozen=True)
class ReportInput:
    model: str
    version: str | None
    window_id: str
    window_iso: tuple[str, str]
    status: str
    rows: int
    features: Mapping[str, FeatureDrift]
    prediction: FeatureDrift | None
    summary: DriftSummary | None
    quality: Mapping[str, float]
    training_quality: Mapping[str, float]
    labelled: int
    history: Sequence[tuple[float, float | None, str]]  # (window end, share drifted, status), oldest first
    drift_share: float
    decision: str
    decision_detail: str
    quality_metric: str | None = None  # the metric the retraining policy watches
    no_drift_reason: str | None = None  # why drift was not measured (no reference profile)
    large_window_rows: int = 1000  # the rules' switch from tests to distances


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _draw(ax: Any, feature: FeatureDrift) -> None:
    if feature.kind == "numeric" and len(feature.plot_bins) > 1:
        edges = [float(e) for e in feature.plot_bins]
        ax.stairs(feature.plot_reference, edges, label="reference", fill=True, alpha=0.4)
        ax.stairs(feature.plot_current, edges, label="current", linewidth=1.5)
    elif feature.plot_bins:
        labels = [str(b) for b in feature.plot_bins][:30]
        xs = range(len(labels))
        ax.bar([x - 0.2 for x in xs], feature.plot_reference[:30], width=0.4, label="reference")
        ax.bar([x + 0.2 for x in xs], feature.plot_current[:30], width=0.4, label="current")
        ax.set_xticks(list(xs), labels, rotation=45, ha="right", fontsize=7)
    ax.set_title(f"{feature.name} ({feature_verdict(feature)})", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=6)


def distributions_plot(features: Sequence[FeatureDrift]) -> bytes:
    """Reference vs current shares of each column (histogram bins or categories), one panel each."""
    cols = min(3, len(features))
    rows = -(-len(features) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.6 * rows), squeeze=False)
    for ax, feature in zip(axes.flat, features, strict=False):
        _draw(ax, feature)
    for ax in list(axes.flat)[len(features) :]:
        ax.set_visible(False)
    fig.tight_layout()
    return _png(fig)


def history_plot(history: Sequence[tuple[float, float | None, str]], threshold: float) -> bytes:
    """Share of drifted features per window over time, with the dataset-drift threshold."""
    fig, ax = plt.subplots(figsize=(7.0, 2.8))
    points = [(t, s) for t, s, status in history if s is not None and status == "ok"]
    if points:
        times = np.array([int(t) for t, _ in points], dtype="datetime64[s]")
        ax.plot(times, np.array([s for _, s in points]), marker="o", label="share of drifted features")
    ax.axhline(threshold, color="red", linestyle="--", label=f"threshold {threshold:g}")
    ax.set_ylim(0, 1.05)
    ax.set_title("drift over recent windows", fontsize=9)
    ax.legend(fontsize=7)
    fig.autofmt_xdate()
    return _png(fig)


def _img(data: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"


def feature_verdict(f: FeatureDrift) -> str:
    """The feature's one verdict in words: drifted / not drifted (with the comparison that decided it), or
    why it was not evaluated."""
    if f.status != "ok" or f.decided_by is None:
        return f"not evaluated ({f.rule})"
    value, op = f.deciding_value, f.rule.split(" ")[1] if " " in f.rule else ""
    held = f"{f.decided_by} {_fmt(value)}"
    if f.drifted:
        return f"drifted: {held} {op} {_fmt(f.threshold)}"
    negated = {">=": "<", "<": ">="}.get(op, "vs")
    return f"not drifted: {held} {negated} {_fmt(f.threshold)}"


def _feature_rows(features: Mapping[str, FeatureDrift]) -> str:
    rows = []
    order = sorted(features.values(), key=lambda f: (not f.drifted, f.status != "ok", f.name))
    for f in order:
        rows.append(
            "<tr>"
            + "".join(
                f"<td>{html.escape(str(c))}</td>"
                for c in (
                    f.name,
                    f.kind,
                    feature_verdict(f),
                    _fmt(f.stats.get("missing_rate_change")),
                    f.count,
                )
            )
            + "</tr>"
        )
    return "\n".join(rows)


def write_report(folder: Path, data: ReportInput) -> None:
    """Write report.html, drift_history.png and drift.json into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    hist = history_plot(data.history, data.drift_share)
    (folder / "drift_history.png").write_bytes(hist)
    (folder / "report.html").write_text(_page(data, hist), encoding="utf-8")
    (folder / "drift.json").write_text(json.dumps(_payload(data), indent=1, default=str), encoding="utf-8")


def _distributions(data: ReportInput) -> str:
    """The distributions section: the prediction's and the most drifted features' plots."""
    all_drifted = sorted(
        (f for f in data.features.values() if f.drifted),
        key=lambda f: -f.stats.get("wasserstein", f.stats.get("js", 0.0)),
    )
    shown = all_drifted[:MAX_FEATURE_PLOTS]
    omitted = (
        f"<p>The {MAX_FEATURE_PLOTS} most drifted of {len(all_drifted)} drifted features are plotted; "
        "every feature is in the table below.</p>"
        if len(all_drifted) > MAX_FEATURE_PLOTS
        else ""
    )
    if data.prediction is not None and data.prediction.status == "ok":
        shown.insert(0, data.prediction)
    plots = [_img(distributions_plot(shown), "reference vs current distributions")] if shown else []
    return f"{omitted}{''.join(plots) or '<p>No drifted feature.</p>'}"


def _verdict(data: ReportInput) -> str:
    summary = data.summary
    if data.status == "empty":
        return "no traffic in this window"
    if data.status == "no_reference":
        return f"drift not measured: {data.no_drift_reason or 'no reference profile'}"
    if data.status == "insufficient" or summary is None or summary.status != "ok":
        return "too few rows to decide"
    return (
        f"{summary.drifted} of {summary.evaluated} features drifted "
        f"(share {summary.share_drifted:.3g}; "
        f"dataset {'DRIFTED' if summary.dataset_drifted else 'not drifted'}, "
        f"{summary.rule})"
    )


def _page(data: ReportInput, hist: bytes) -> str:
    """report.html: the verdict, the decision, the plots and the tables."""
    quality_rows = _quality_rows(data)
    e = html.escape
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>modelloop monitoring: {e(data.model)} {e(data.window_id)}</title>
<style>body{{font-family:sans-serif;margin:1.5em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:2px 6px;font-size:13px}}img{{margin:4px}}</style></head><body>
<h1>{e(data.model)} version {e(str(data.version))}</h1>
<p>Window {e(data.window_iso[0])} to {e(data.window_iso[1])} ({e(data.window_id)}):
{data.rows} rows compared.</p>
<p><b>{e(_verdict(data))}</b></p>
<p>Retraining: {e(data.decision)} &mdash; {e(data.decision_detail)}</p>
<h2>Drift over recent windows</h2>{_img(hist, "drift history")}
<h2>Distributions</h2>{_distributions(data)}
<h2>Quality ({data.labelled} labelled rows)</h2>
<table><tr><th>metric</th><th>window</th><th>training</th></tr>{quality_rows}</table>
<h2>Features</h2>
<p>Each feature's verdict is the rule that decided it: above {e(str(data.large_window_rows))} rows a distance
(Wasserstein, Jensen-Shannon), below a test's p-value. Every statistic (PSI included, which decides nothing)
is in the run's <code>drift_features.json</code> table and in <code>drift.json</code>.</p>
<table><tr><th>feature</th><th>kind</th><th>verdict</th><th>missing-rate change</th><th>values</th></tr>
{_feature_rows(data.features)}</table>
</body></html>
"""


def _quality_rows(data: ReportInput) -> str:
    """One row per measured metric, the watched one first and always present."""
    watched = data.quality_metric
    names = sorted(data.quality, key=lambda k: (k != watched, k))
    if watched and watched not in data.quality and data.labelled:
        names.insert(0, watched)
    rows = []
    for k in names:
        value = data.quality.get(k)
        shown = _fmt(value) if value is not None else "not measurable from the logged predictions"
        label = f"{k} (watched)" if k == watched else k
        training = _fmt(data.training_quality.get(k))
        rows.append(f"<tr><td>{html.escape(label)}</td><td>{html.escape(shown)}</td><td>{training}</td></tr>")
    return "".join(rows)


def _payload(data: ReportInput) -> dict[str, object]:
    """drift.json: the window's statistics for programs."""
    return {
        "model": data.model,
        "version": data.version,
        "window": data.window_id,
        "status": data.status,
        "rows": data.rows,
        "summary": asdict(data.summary) if data.summary else None,
        "features": {
            k: {
                "kind": f.kind,
                "status": f.status,
                "drifted": f.drifted,
                "rule": f.rule,
                "decided_by": f.decided_by,
                "threshold": f.threshold,
                "psi_band": f.psi_band,  # PSI's conventional band: information, not a verdict
                "stats": f.stats,
            }
            for k, f in data.features.items()
        },
        "prediction": None if data.prediction is None else data.prediction.stats,
        "quality": dict(data.quality),
        "quality_metric": data.quality_metric,
        "decision": data.decision,
        "no_drift_reason": data.no_drift_reason,
    }


__all__ = [
    "MAX_FEATURE_PLOTS",
    "ReportInput",
    "distributions_plot",
    "feature_verdict",
    "history_plot",
    "write_report",
]
