"""Reading a version's story from MLflow and writing it as the version's description.

`refresh_story(registry, model, version)` gathers the facts (`adapters.version_story`): the version's gate
tags, its training run (test metrics of the model, the baseline and production; the run that triggered it),
the monitoring run behind a retraining (window, drifted features, cause), and every deployment run of the
model (rollouts to this version, and the rollout that replaced it); composes the markdown and sets it when
it differs. Level-triggered: it rebuilds the whole story from what MLflow holds, so calling it again (after a
retry, a restart, a lost write) converges. Called by training once the version is registered and by the
controller's registry (`deploy.registry.MlflowRegistry.record_rollout`) for the versions a rollout involved.

A missing piece (a deleted run, no deployment yet) leaves its section short, never an error; the registry
port's errors (unavailable, refused) propagate.
"""

from __future__ import annotations

import json
import logging

from modelloop.contract.errors import NotFoundError
from modelloop.contract.model_registry import RunInfo
from modelloop.contract.registry import (
    BASELINE_METRIC_PREFIX,
    DEPLOYMENTS_EXPERIMENT,
    PARAM_METRIC,
    PRODUCTION_METRIC_PREFIX,
    TAG_GATE,
    TAG_GATE_PRODUCTION,
    TAG_GATE_REASONS,
    TAG_MONITOR_DRIFTED,
    TAG_MONITOR_WINDOW,
    TAG_RETRAIN_CAUSE,
    TAG_ROLLOUT_REASON,
    TAG_TRIGGERED_BY,
    TAG_TRIGGERED_BY_CAUSE,
    TEST_METRIC_PREFIX,
)

from . import mlflow_rollouts as dep
from .mlflow_registry import MlflowModelRegistry
from .mlflow_runs import MlflowRuns, RunRecord
from .version_story import Gate, Rollout, RunLink, Trigger, VersionStory, compose

log = logging.getLogger(__name__)

#: MLflow's run-name tag (`mlflow.utils.mlflow_tags.MLFLOW_RUN_NAME`).
RUN_NAME_TAG = "mlflow.runName"
#: The monitoring run's param naming the version it watched (`monitoring.records.PARAM_MODEL_VERSION`).
MONITORED_VERSION_PARAM = "model_version"
#: A monitoring run's per-feature table (`monitoring.run_content.FEATURES_TABLE_PATH`), its prediction row.
DRIFT_TABLE_PATH = "drift_features.json"
PREDICTION_ROW = "(prediction)"
#: Per-feature drift verdicts a monitoring run may carry as metrics (1.0: drifted; older runs).
DRIFTED_METRIC_PREFIX = "drift.drifted."
#: The training run's param describing the baseline (`training.records.log_start`).
BASELINE_PARAM = "baseline"


def refresh_story(registry: MlflowModelRegistry, model: str, version: str) -> bool:
    """Compose the version's story from MLflow and set it as its description; True when it changed."""
    return registry.set_description(model, version, compose(gather(registry, model, version)))


def gather(registry: MlflowModelRegistry, model: str, version: str) -> VersionStory:
    """The facts of the version's story as MLflow holds them now."""
    info = registry.version(model, version)
    training = _run(registry, info.run_id)
    monitoring_id = info.tags.get(TAG_TRIGGERED_BY) or (
        training.tags.get(TAG_TRIGGERED_BY) if training is not None else None
    )
    return VersionStory(
        model=model,
        version=version,
        training=_link(training),
        gate=_gate(info.tags, training),
        trigger=_trigger(registry, monitoring_id, info.tags) if monitoring_id else None,
        rollouts=rollouts_of(
            MlflowRuns(registry).search(DEPLOYMENTS_EXPERIMENT, params={dep.PARAM_MODEL: model}), version
        ),
    )


def _run(registry: MlflowModelRegistry, run_id: str | None) -> RunInfo | None:
    if not run_id:
        return None
    try:
        return registry.run(run_id)
    except NotFoundError:
        log.info("run %s named by a version is gone; its part of the story is left out", run_id)
        return None


def _link(run: RunInfo | None) -> RunLink | None:
    if run is None:
        return None
    return RunLink(run.experiment_id, run.run_id, run.tags.get(RUN_NAME_TAG, run.run_id))


def _prefixed(metrics: dict[str, float], prefix: str) -> dict[str, float]:
    return {k[len(prefix) :]: v for k, v in metrics.items() if k.startswith(prefix)}


def _gate(tags: dict[str, str], training: RunInfo | None) -> Gate | None:
    if training is None and TAG_GATE not in tags:
        return None
    metrics = training.metrics if training is not None else {}
    params = training.params if training is not None else {}
    production = _prefixed(metrics, PRODUCTION_METRIC_PREFIX)
    reasons = [r for r in tags.get(TAG_GATE_REASONS, "").split("; ") if r]
    return Gate(
        verdict=tags.get(TAG_GATE, ""),
        reasons=reasons,
        metric=params.get(PARAM_METRIC, ""),
        model=_prefixed(metrics, TEST_METRIC_PREFIX),
        baseline=_prefixed(metrics, BASELINE_METRIC_PREFIX),
        baseline_name=params.get(BASELINE_PARAM, "baseline"),
        production=production or None,
        production_version=tags.get(TAG_GATE_PRODUCTION),
    )


def _drift_table(registry: MlflowModelRegistry, run: RunInfo) -> bytes | None:
    """The monitoring run's per-feature table artifact, when it has one."""
    try:
        return registry.read_artifact(run.run_id, DRIFT_TABLE_PATH)
    except NotFoundError:
        return None


def drifted_features(run: RunInfo, *, table: bytes | None = None) -> list[str]:
    """The features a monitoring run found drifted: its tag, else its per-feature table (`table`, MLflow's
    table JSON: columns and data), else its per-feature verdict metrics."""
    tagged = run.tags.get(TAG_MONITOR_DRIFTED)
    if tagged is not None:
        return [f for f in tagged.split(",") if f]
    if table is not None:
        try:
            doc = json.loads(table)
            rows = [dict(zip(doc["columns"], row, strict=True)) for row in doc["data"]]
            return [
                str(r["feature"])
                for r in rows
                if r.get("drifted") is True and r.get("feature") != PREDICTION_ROW
            ]
        except (ValueError, KeyError, TypeError):
            log.info("the drift table of monitoring run %s is not readable; the metrics are used", run.run_id)
    return sorted(
        k[len(DRIFTED_METRIC_PREFIX) :]
        for k, v in run.metrics.items()
        if k.startswith(DRIFTED_METRIC_PREFIX) and v >= 1.0
    )


def _trigger(registry: MlflowModelRegistry, run_id: str, version_tags: dict[str, str]) -> Trigger | None:
    run = _run(registry, run_id)
    if run is None:
        return None
    link = _link(run)
    assert link is not None
    return Trigger(
        run=link,
        monitored_version=run.params.get(MONITORED_VERSION_PARAM),
        window=run.tags.get(TAG_MONITOR_WINDOW),
        drifted_features=drifted_features(run, table=_drift_table(registry, run)),
        cause=version_tags.get(TAG_TRIGGERED_BY_CAUSE) or run.tags.get(TAG_RETRAIN_CAUSE),
    )


def rollouts_of(runs: list[RunRecord], version: str) -> list[Rollout]:
    """The rollouts of `version` among a model's deployment runs: each rollout to it, with when (and by which
    version) it was replaced on that binding, oldest first."""
    ordered = sorted(runs, key=lambda r: (r.params.get(dep.PARAM_AT, ""), r.start_time))
    out: list[Rollout] = []
    for i, run in enumerate(ordered):
        p = run.params
        if p.get(dep.PARAM_TO_VERSION) != version:
            continue
        serving = p.get(dep.PARAM_OUTCOME) == "serving"
        until = by = None
        if serving:
            for later in ordered[i + 1 :]:
                q = later.params
                if (
                    q.get(dep.PARAM_BINDING) == p.get(dep.PARAM_BINDING)
                    and q.get(dep.PARAM_OUTCOME) == "serving"
                    and q.get(dep.PARAM_TO_VERSION) != version
                ):
                    until, by = q.get(dep.PARAM_AT) or None, q.get(dep.PARAM_TO_VERSION)
                    break
        out.append(
            Rollout(
                binding=p.get(dep.PARAM_BINDING, ""),
                target=p.get(dep.PARAM_TARGET, ""),
                address=p.get(dep.PARAM_ADDRESS, ""),
                outcome=("retired" if by else "serving") if serving else p.get(dep.PARAM_OUTCOME, "?"),
                serving_from=(p.get(dep.PARAM_AT) or None) if serving else None,
                serving_until=until,
                replaced_by=by,
                record=RunLink(run.experiment_id, run.run_id, run.tags.get(RUN_NAME_TAG, run.run_id)),
                reason="" if serving else run.tags.get(TAG_ROLLOUT_REASON, ""),
            )
        )
    return out


__all__ = ["drifted_features", "gather", "refresh_story", "rollouts_of"]
