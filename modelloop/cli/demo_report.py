"""The demo's final tables, read back from MLflow's records (not from what the demo remembers): the versions
with their metrics beside the baseline, the gate, aliases and rollouts; the drift of every monitoring window;
the rollouts with their durations. Used by `modelloop demo`.

Versions and their training runs are read through the registry (`MlflowModelRegistry`: the port's `run`, and
its `versions` / `aliases` beyond the port); the monitoring windows and the deployment runs by searching their
experiments (`adapters.mlflow_runs.MlflowRuns`: the monitoring-records port reads one model's history for the
trigger, without the accuracy or the retraining decision the table shows).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from modelloop.adapters.mlflow_registry import MlflowModelRegistry
from modelloop.adapters.mlflow_runs import MlflowRuns
from modelloop.contract.model_registry import RunInfo
from modelloop.contract.registry import (
    BASELINE_METRIC_PREFIX,
    DEPLOYMENTS_EXPERIMENT,
    MONITORING_EXPERIMENT,
    PARAM_METRIC,
    TAG_GATE,
    TAG_MONITOR_MODEL,
    TAG_MONITOR_STATUS,
    TAG_RETRAIN_DECISION,
    TAG_ROLLOUT,
    TAG_ROLLOUT_SERVING_FROM,
    TAG_TRIGGERED_BY,
    TEST_METRIC_PREFIX,
)


@dataclass(frozen=True)
class VersionRow:
    version: str
    metric: str
    value: float | None
    baseline: float | None
    gate: str
    aliases: list[str]
    rollout: str
    since: str
    triggered_by: str


@dataclass(frozen=True)
class WindowRow:
    window: str
    version: str
    status: str
    rows: int
    share_drifted: float | None
    accuracy: float | None
    retrain: str


@dataclass(frozen=True)
class RolloutRow:
    from_version: str
    to_version: str
    outcome: str
    seconds: float | None


def versions(registry: MlflowModelRegistry, model: str) -> list[VersionRow]:
    out = []
    for mv in registry.versions(model):
        run = registry.run(mv.run_id) if mv.run_id else RunInfo(run_id="", experiment_id="", status="")
        metric = run.params.get(PARAM_METRIC, "")
        out.append(
            VersionRow(
                version=mv.version,
                metric=metric,
                value=run.metrics.get(f"{TEST_METRIC_PREFIX}{metric}"),
                baseline=run.metrics.get(f"{BASELINE_METRIC_PREFIX}{metric}"),
                gate=mv.tags.get(TAG_GATE, "-"),
                aliases=registry.aliases(model, mv.version),  # listed versions carry no aliases
                rollout=mv.tags.get(TAG_ROLLOUT, "-"),
                since=mv.tags.get(TAG_ROLLOUT_SERVING_FROM, "-"),
                triggered_by=run.tags.get(TAG_TRIGGERED_BY, ""),
            )
        )
    return out


def windows(runs: MlflowRuns, model: str) -> list[WindowRow]:
    found = runs.search(MONITORING_EXPERIMENT, tags={TAG_MONITOR_MODEL: model})
    out = []
    for run in sorted(found, key=lambda r: r.params.get("window_start", "")):
        m = run.metrics
        out.append(
            WindowRow(
                window=run.params.get("window_id", "?"),
                version=run.params.get("model_version", "") or "-",
                status=run.tags.get(TAG_MONITOR_STATUS, "?"),
                rows=int(m.get("window.rows", 0)),
                share_drifted=m.get("drift.share_drifted"),
                accuracy=m.get("quality.accuracy"),
                retrain=run.tags.get(TAG_RETRAIN_DECISION, "-"),
            )
        )
    return out


def rollouts(runs: MlflowRuns, binding: str) -> list[RolloutRow]:
    found = runs.search(DEPLOYMENTS_EXPERIMENT, params={"binding": binding})
    return [
        RolloutRow(
            from_version=r.params.get("from_version") or "-",
            to_version=r.params.get("to_version", "?"),
            outcome=r.params.get("outcome", "?"),
            seconds=r.metrics.get("rollout.seconds"),
        )
        for r in sorted(found, key=lambda r: r.start_time)
    ]


def _num(value: float | None, fmt: str = ".3f") -> str:
    return "-" if value is None else format(value, fmt)


def table(headers: list[str], rows: list[list[str]]) -> str:
    """A plain text table."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def render(registry: MlflowModelRegistry, model: str, binding: str) -> str:
    """The three tables as text."""
    runs = MlflowRuns(registry)
    vs = versions(registry, model)
    metric = vs[0].metric if vs else "metric"
    parts = [
        "Versions (test set of each training; the baseline on the same rows)",
        table(
            [
                "version",
                f"test {metric}",
                f"baseline {metric}",
                "gate",
                "aliases",
                "rollout",
                "since",
                "trigger",
            ],
            [
                [
                    v.version,
                    _num(v.value),
                    _num(v.baseline),
                    v.gate,
                    ",".join(v.aliases) or "-",
                    v.rollout,
                    v.since,
                    "monitoring run " + v.triggered_by[:8] if v.triggered_by else "initial",
                ]
                for v in vs
            ],
        ),
        "",
        "Monitoring windows (drifted share of the 30 features; accuracy from feedback labels)",
        table(
            ["window (UTC)", "version", "status", "rows", "drifted share", "accuracy", "retrain"],
            [
                [
                    w.window,
                    w.version,
                    w.status,
                    str(w.rows),
                    _num(w.share_drifted, ".2f"),
                    _num(w.accuracy),
                    w.retrain,
                ]
                for w in windows(runs, model)
            ],
        ),
        "",
        "Rollouts",
        table(
            ["from", "to", "outcome", "seconds"],
            [
                [r.from_version, r.to_version, r.outcome, _num(r.seconds, ".1f")]
                for r in rollouts(runs, binding)
            ],
        ),
    ]
    return "\n".join(parts)


def utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%H:%M:%S")


__all__ = [
    "RolloutRow",
    "VersionRow",
    "WindowRow",
    "render",
    "rollouts",
    "table",
    "utc",
    "versions",
    "windows",
]
