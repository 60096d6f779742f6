"""What a registered version and its training run say to people in the MLflow UI.

Called by `training.run` around registration:
- `registration_tags`: the tags a new version is created with: the gate's verdict (and the production version
  it compared with), its training run, and, for a retraining, the monitoring run that asked for it, its cause
  and when it fired (`modelloop.triggered_by*`), so the version itself says why it exists;
- `describe`, once the version is registered: names the training run after it (`train v2 — retraining after
  drift`, `train v1 — initial training`), writes the run's description (`mlflow.note.content`), and writes the
  version's story as its description (`adapters.mlflow_version_story`, which the controller rewrites after
  every rollout). A failure here is logged, never raised: the version is registered, and the story is
  level-triggered (the next rollout rewrites it).

Reaches MLflow only through `adapters.mlflow_registry.MlflowModelRegistry` (the registry port and its
`set_description`).
"""

from __future__ import annotations

import logging

from modelloop.adapters.mlflow_registry import MlflowModelRegistry
from modelloop.adapters.mlflow_ui import version_url
from modelloop.adapters.mlflow_version_story import RUN_NAME_TAG, refresh_story
from modelloop.adapters.version_story import retraining_title
from modelloop.contract.errors import ModelloopError
from modelloop.contract.registry import (
    TAG_GATE,
    TAG_GATE_MARGIN,
    TAG_GATE_PRODUCTION,
    TAG_GATE_REASONS,
    TAG_RETRAIN_CAUSE,
    TAG_RETRAIN_FIRED_AT,
    TAG_TRAINING_RUN,
    TAG_TRIGGERED_BY,
    TAG_TRIGGERED_BY_CAUSE,
    TAG_TRIGGERED_BY_FIRED_AT,
)
from modelloop.training.gate import GateResult

log = logging.getLogger(__name__)

#: MLflow's run-description tag (`mlflow.utils.mlflow_tags.MLFLOW_RUN_NOTE`).
RUN_NOTE_TAG = "mlflow.note.content"
#: The monitoring run's tags a retrained version carries, under its own keys (the monitoring run's keys on a
#: version mean "a retraining was fired about this version").
COPIED_RETRAIN_TAGS = {
    TAG_RETRAIN_CAUSE: TAG_TRIGGERED_BY_CAUSE,
    TAG_RETRAIN_FIRED_AT: TAG_TRIGGERED_BY_FIRED_AT,
}


def retrain_tags(registry: MlflowModelRegistry, triggered_by: str | None) -> dict[str, str]:
    """The retraining tags of a version trained because monitoring run `triggered_by` asked ({} when none
    did); the monitoring run's cause and firing time when it can be read."""
    if not triggered_by:
        return {}
    tags = {TAG_TRIGGERED_BY: triggered_by}
    try:
        monitoring = registry.run(triggered_by).tags
    except ModelloopError as exc:  # gone, or MLflow down: the run id alone still says why
        log.warning("monitoring run %s could not be read (%s); its cause is not copied", triggered_by, exc)
        return tags
    tags.update(
        {ours: monitoring[theirs] for theirs, ours in COPIED_RETRAIN_TAGS.items() if monitoring.get(theirs)}
    )
    return tags


def registration_tags(gate: GateResult, run_id: str, *, retrain: dict[str, str]) -> dict[str, str]:
    """The tags a new version is created with (see the module docstring)."""
    tags = {
        TAG_GATE: "passed" if gate.passed else "failed",
        TAG_GATE_REASONS: "; ".join(gate.reasons),
        TAG_GATE_MARGIN: f"{gate.margin:.6g}",
        TAG_TRAINING_RUN: run_id,
        **retrain,
    }
    if gate.production is not None:
        tags[TAG_GATE_PRODUCTION] = gate.production.version
    return tags


def run_name(version: str, retrain: dict[str, str]) -> str:
    """The training run's name once its version is known."""
    if retrain:
        why = retraining_title(retrain.get(TAG_TRIGGERED_BY_CAUSE)).lower()
    else:
        why = "initial training" if version == "1" else "training on request"
    return f"train v{version} — {why}"


def run_note(
    model: str, version: str, gate: GateResult, *, alias: str | None, retrain: dict[str, str]
) -> str:
    """The training run's description (markdown)."""
    verdict = "passed" if gate.passed else "failed"
    moved = f"alias `{alias}` moved to it" if alias else "no alias moved"
    lines = [
        f"Trained and registered [version {version}]({version_url(None, model, version)}) of **{model}**: "
        f"gate {verdict}, {moved}.",
    ]
    if retrain:
        lines.append(
            f"{retraining_title(retrain.get(TAG_TRIGGERED_BY_CAUSE))}: asked for by monitoring run "
            f"`{retrain[TAG_TRIGGERED_BY]}` (the version's page links it)."
        )
    lines.append("\n".join(f"- {r}" for r in gate.reasons))
    lines.append("The model, the baseline and production side by side: `comparison/test_metrics.json`.")
    return "\n\n".join(lines)


def describe(
    registry: MlflowModelRegistry,
    *,
    model: str,
    version: str,
    run_id: str,
    gate: GateResult,
    alias: str | None,
    retrain: dict[str, str],
) -> None:
    """Name and describe the training run, then write the version's story (never raises)."""
    try:
        registry.set_run_tags(
            run_id,
            {
                RUN_NAME_TAG: run_name(version, retrain),
                RUN_NOTE_TAG: run_note(model, version, gate, alias=alias, retrain=retrain),
            },
        )
        refresh_story(registry, model, version)
    except ModelloopError as exc:
        log.warning(
            "the story of %s version %s was not written (%s); the controller writes it", model, version, exc
        )


__all__ = ["describe", "registration_tags", "retrain_tags", "run_name", "run_note"]
