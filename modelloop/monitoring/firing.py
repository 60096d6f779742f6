"""The retraining decision of one window: ask the trigger, launch a retraining when it fires, record the
firing on the registered model and version, and say it all in the tags of the window's run.

Called by `monitoring.job.run_window` once the window's run holds its metrics. The last firing (its streak and
window end, for "never twice for the same streak" and the cool-down) is read from the registered model's tags
and written to them, and to the version's, through the `ModelRegistry` port: the cause names the window whose
run fired, `fired_at` is that window's end in ISO-8601 UTC (older registries hold unix seconds: both read).

Re-running a window whose run launched a retraining carries that record (the `modelloop.retrain.*` tags)
over to the new run, adds `modelloop.retrain.replaced_run` (the id the training run's `--triggered-by`
names) and `modelloop.retrain.rerun_decision` (what the re-run decided itself), and points the registry's
tags at the new run.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from modelloop.contract.errors import ModelloopError
from modelloop.contract.model_registry import ModelRegistry
from modelloop.contract.registry import (
    TAG_RETRAIN_CAUSE,
    TAG_RETRAIN_DECISION,
    TAG_RETRAIN_DETAIL,
    TAG_RETRAIN_FIRED_AT,
    TAG_RETRAIN_LAUNCHED,
    TAG_RETRAIN_MONITORING_RUN,
    TAG_RETRAIN_PREFIX,
    TAG_RETRAIN_REPLACED_RUN,
    TAG_RETRAIN_RERUN_DECISION,
    TAG_RETRAIN_STREAK,
)
from modelloop.contract.timestamps import iso_utc, unix_seconds
from modelloop.monitoring.measure import Measurement
from modelloop.monitoring.records import WindowRun
from modelloop.monitoring.reference import Reference, training_config
from modelloop.monitoring.retrain import Retrainer, RetrainLaunch, RetrainRequest
from modelloop.monitoring.trigger import Decision, LastFiring, TriggerDecision

log = logging.getLogger(__name__)

#: Most characters of a free-text tag value (MLflow takes 8000).
TAG_TEXT_LIMIT = 5000


@dataclass(frozen=True)
class Retraining:
    """What one window decided about retraining, what it launched, and the run tags that record it."""

    decision: TriggerDecision
    launch: RetrainLaunch | None
    tags: dict[str, str]


@dataclass(frozen=True)
class Launcher:
    """Where a retraining goes: the retrainer (None: never launch, the decision says suppressed), the registry
    its config is read from and its firing recorded in, and the tracking server it records to."""

    retrainer: Retrainer | None
    registry: ModelRegistry
    tracking_uri: str


def last_firing(registry: ModelRegistry, model_name: str) -> LastFiring | None:
    """The model's last retraining launched by monitoring, from the registered model's tags."""
    tags = registry.model_tags(model_name)
    streak = tags.get(TAG_RETRAIN_STREAK) or tags.get(TAG_RETRAIN_CAUSE)  # older registries: the cause
    at = parse_fired_at(tags.get(TAG_RETRAIN_FIRED_AT))
    if not streak or at is None:
        return None
    return LastFiring(streak, at)


def fired_at(window_end: float) -> str:
    """The `fired_at` tag: a window end as ISO-8601 UTC."""
    return iso_utc(window_end)


def parse_fired_at(text: str | None) -> float | None:
    """A `fired_at` tag back to unix seconds (ISO-8601, or the unix seconds of older registries)."""
    if not text:
        return None
    try:
        return unix_seconds(text)
    except ValueError:
        log.warning("tag %s is neither ISO-8601 nor unix seconds; ignored", TAG_RETRAIN_FIRED_AT)
        return None


def settle(
    model_name: str,
    decision: TriggerDecision,
    *,
    m: Measurement,
    run_id: str,
    window_end: float,
    previous: Sequence[WindowRun],
    launcher: Launcher,
) -> Retraining:
    """Act on the trigger's decision for the window whose run is `run_id` (launch when it fired) and build
    the run's retraining tags; `previous` are the window's earlier runs, which this run replaces."""
    launch = None
    if decision.fire:
        decision, launch = _launch(
            model_name, decision, m=m, run_id=run_id, window_end=window_end, launcher=launcher
        )
    tags = {
        TAG_RETRAIN_DECISION: str(decision.decision),
        TAG_RETRAIN_DETAIL: decision.detail[:TAG_TEXT_LIMIT],
    }
    if decision.cause:
        tags[TAG_RETRAIN_CAUSE] = decision.cause
    if decision.streak:
        tags[TAG_RETRAIN_STREAK] = decision.streak
    if launch is not None:
        tags.update({f"{TAG_RETRAIN_PREFIX}{k}": v for k, v in launch.details.items()})
        tags[TAG_RETRAIN_LAUNCHED] = launch.description[:TAG_TEXT_LIMIT]
    elif fired_before := _fired_run(previous):
        # this window fired before: its run is replaced, the record of the firing is carried over
        tags = _carried_over(fired_before, decision)
        repoint_firing(launcher.registry, model_name, m.rows.version, fired_before.run_id, run_id)
    return Retraining(decision=decision, launch=launch, tags=tags)


def repoint_firing(
    registry: ModelRegistry, model_name: str, version: str | None, old_run: str, new_run: str
) -> None:
    """After a re-run replaced the monitoring run that fired, point the registry's tags at the new run."""
    moved = {TAG_RETRAIN_MONITORING_RUN: new_run}
    if registry.model_tags(model_name).get(TAG_RETRAIN_MONITORING_RUN) == old_run:
        registry.set_model_tags(model_name, moved)
    if version and registry.version(model_name, version).tags.get(TAG_RETRAIN_MONITORING_RUN) == old_run:
        registry.set_version_tags(model_name, version, moved)


def _fired_run(previous: Sequence[WindowRun]) -> WindowRun | None:
    for run in previous:
        if run.tags.get(TAG_RETRAIN_DECISION) == str(Decision.FIRED):
            return run
    return None


def _carried_over(fired: WindowRun, decision: TriggerDecision) -> dict[str, str]:
    tags = {k: v for k, v in fired.tags.items() if k.startswith(TAG_RETRAIN_PREFIX)}
    tags[TAG_RETRAIN_RERUN_DECISION] = str(decision.decision)
    tags[TAG_RETRAIN_REPLACED_RUN] = fired.tags.get(TAG_RETRAIN_REPLACED_RUN, fired.run_id)
    return tags


def _launch(
    model_name: str,
    decision: TriggerDecision,
    *,
    m: Measurement,
    run_id: str,
    window_end: float,
    launcher: Launcher,
) -> tuple[TriggerDecision, RetrainLaunch | None]:
    assert m.reference is not None and decision.cause is not None
    if launcher.retrainer is None:
        detail = f"{decision.detail}; retraining is off"
        return TriggerDecision(Decision.SUPPRESSED, decision.cause, detail, decision.streak), None
    try:
        launch = launcher.retrainer.launch(
            _request(model_name, decision.cause, m.reference, run_id, launcher)
        )
    except ModelloopError as exc:
        log.error("model %s: retraining could not be launched: %s", model_name, exc)
        detail = f"{decision.detail}; launch failed: {exc}"
        return TriggerDecision(Decision.LAUNCH_FAILED, decision.cause, detail, decision.streak), None
    fired = {
        TAG_RETRAIN_CAUSE: decision.cause,
        TAG_RETRAIN_STREAK: decision.streak or decision.cause,
        TAG_RETRAIN_FIRED_AT: fired_at(window_end),
        TAG_RETRAIN_MONITORING_RUN: run_id,
    }
    launcher.registry.set_model_tags(model_name, fired)
    launcher.registry.set_version_tags(model_name, m.reference.version, fired)
    return decision, launch


def _request(model_name: str, cause: str, ref: Reference, run_id: str, launcher: Launcher) -> RetrainRequest:
    """The retraining of the version `ref` describes (reads its training config: a failure is a launch
    failure)."""
    return RetrainRequest(
        model_name=model_name,
        model_version=ref.version,
        training_run_id=ref.training_run_id,
        config_text=training_config(launcher.registry, ref),
        tracking_uri=launcher.tracking_uri,
        monitoring_run_id=run_id,
        cause=cause,
    )


__all__ = [
    "Launcher",
    "Retraining",
    "fired_at",
    "last_firing",
    "parse_fired_at",
    "repoint_firing",
    "settle",
]
