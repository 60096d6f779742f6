"""Registry conventions shared by every part: aliases and roles, stage mapping, tag keys, artifact paths,
experiment names.

Training writes with these names, the controller and the scoring tier read them, monitoring finds the
reference profile through them. Changing a value here changes the on-disk contract with existing registries.
"""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    """What a registered version is for.

    Roles are held by aliases; MLflow's deprecated stages map to them."""

    CHAMPION = "champion"
    CHALLENGER = "challenger"


#: The alias that marks the champion: the version answering production traffic.
PRODUCTION_ALIAS = "production"
#: The alias that marks the candidate: shadow or canary traffic.
CHALLENGER_ALIAS = "challenger"

ALIAS_FOR_ROLE: dict[Role, str] = {Role.CHAMPION: PRODUCTION_ALIAS, Role.CHALLENGER: CHALLENGER_ALIAS}

#: MLflow's deprecated stages, honoured for older registries, mapped to the same roles.
STAGE_FOR_ROLE: dict[Role, str] = {Role.CHAMPION: "Production", Role.CHALLENGER: "Staging"}


class Route(StrEnum):
    """How a scored instance was answered; recorded with every logged prediction."""

    CHAMPION = "champion"
    CHALLENGER = "challenger"  # canary: the challenger answered the caller
    SHADOW = "shadow"  # scored by the challenger off the response path


#: Every tag key modelloop writes starts with this prefix.
TAG_PREFIX = "modelloop."

# Tags on model versions.
TAG_GATE = "modelloop.gate"  # "passed" | "failed"
TAG_GATE_REASONS = "modelloop.gate.reasons"
TAG_GATE_MARGIN = "modelloop.gate.margin"
TAG_ROLLOUT = "modelloop.rollout"  # "serving" | "failed" | "rolled_back" | "retired"
TAG_ROLLOUT_REASON = "modelloop.rollout.reason"
TAG_ROLLOUT_BINDING = "modelloop.rollout.binding"
TAG_ROLLOUT_SERVING_FROM = "modelloop.rollout.serving_from"  # when it began serving (ISO-8601 UTC)
TAG_ROLLOUT_SERVING_UNTIL = "modelloop.rollout.serving_until"  # when a retired version stopped serving
TAG_ROLLOUT_TARGET = "modelloop.rollout.target"  # where it serves: "local" | "kubernetes"
TAG_ROLLOUT_ADDRESS = "modelloop.rollout.address"  # the gRPC address its binding answers on
TAG_GATE_PRODUCTION = "modelloop.gate.production_version"  # the production version the gate compared with
TAG_TRAINING_RUN = "modelloop.training_run_id"
TAG_PROFILE_SOURCE = "modelloop.profile.source"  # `modelloop profile`: the rows it was built on
TAG_PROFILED_AT = "modelloop.profile.attached_at"  # `modelloop profile`: when (ISO-8601 UTC)

# Tags on runs.
TAG_RUN_KIND = "modelloop.kind"  # "training" | "trial" | "baseline" | "monitoring" | "deployment"
TAG_CONFIG_PATH = "modelloop.config"
TAG_TRIGGERED_BY = "modelloop.triggered_by"  # training run started by a monitoring run: its run id
# On the version such a training registered (the monitoring run's own `retrain.*` tags are about the version
# it watched): the run id (TAG_TRIGGERED_BY), and the cause and firing time copied from that run.
TAG_TRIGGERED_BY_CAUSE = "modelloop.triggered_by.cause"
TAG_TRIGGERED_BY_FIRED_AT = "modelloop.triggered_by.fired_at"
TAG_DEPLOY_BINDING = "modelloop.binding"  # on a deployment run: the binding it rolled out
TAG_ROLLOUT_RECORD_ID = (
    "modelloop.rollout.record_id"  # on a deployment run: makes writing it again idempotent
)
TAG_MONITOR_MODEL = "modelloop.monitor.model"
TAG_MONITOR_WINDOW = "modelloop.monitor.window"
TAG_MONITOR_DRIFTED = "modelloop.monitor.drifted_features"  # the drifted features, comma-separated
TAG_MONITOR_STATUS = "modelloop.monitor.status"  # "ok" | "insufficient" | "no_reference"
TAG_QUALITY_BREACHED = "modelloop.monitor.quality_breached"  # quality floor breached in the window: "1" | "0"
TAG_MONITOR_NO_DRIFT_REASON = "modelloop.monitor.no_drift_reason"  # why drift was not measured
# Retraining triggered by monitoring: on the monitoring run that decided, on the model version it was about,
# and on the registered model (the last firing, for the cool-down and "never twice for the same cause").
TAG_RETRAIN_DECISION = "modelloop.retrain.decision"  # "fired" | "cooldown" | "already_fired" | ...
TAG_RETRAIN_CAUSE = "modelloop.retrain.cause"  # the window that fired, e.g. "drift:3:20261123T080000Z-..."
TAG_RETRAIN_FIRED_AT = "modelloop.retrain.fired_at"  # end of the window that fired (ISO-8601 UTC)
TAG_RETRAIN_STREAK = "modelloop.retrain.streak"  # what "the same cause" means: kind, version, first window
TAG_RETRAIN_MONITORING_RUN = "modelloop.retrain.monitoring_run"  # the monitoring run that fired
# Only on the monitoring run: what it decided and launched, and what a re-run of the window carried over.
TAG_RETRAIN_PREFIX = "modelloop.retrain."  # every retraining tag starts with it (a re-run carries them over)
TAG_RETRAIN_DETAIL = "modelloop.retrain.detail"  # why the trigger decided so, in words
TAG_RETRAIN_LAUNCHED = "modelloop.retrain.launched"  # what the retrainer started (its description)
TAG_RETRAIN_RERUN_DECISION = "modelloop.retrain.rerun_decision"  # a re-run's own decision (the firing stays)
TAG_RETRAIN_REPLACED_RUN = "modelloop.retrain.replaced_run"  # the run that fired (the training names it)

# Params and metric names of a training run (the parent run), read by the gate and by monitoring.
PARAM_METRIC = "modelloop.metric"  # the metric the study optimises, e.g. "roc_auc", "rmse"
PARAM_DIRECTION = "modelloop.direction"  # "maximize" | "minimize"
PARAM_TASK = "modelloop.task"  # "classification" | "regression"
PARAM_TARGET = "modelloop.target"  # the target column
TEST_METRIC_PREFIX = "test."  # the model's metrics on the test set: "test.roc_auc", "test.accuracy", ...
BASELINE_METRIC_PREFIX = "baseline.test."  # the baseline's metrics on the same test set
PRODUCTION_METRIC_PREFIX = "production.test."  # the production version's, on the same test set

# Artifact paths inside a training run.
MODEL_ARTIFACT_PATH = "model"
REFERENCE_PROFILE_PATH = "modelloop/reference_profile.json"
REFERENCE_PROFILE_SUMMARY_PATH = "modelloop/reference_profile.md"  # the same, for people
RESOLVED_CONFIG_PATH = "modelloop/training_config.yaml"

# Experiments modelloop creates.
MONITORING_EXPERIMENT = "modelloop-monitoring"
DEPLOYMENTS_EXPERIMENT = "modelloop-deployments"


def is_modelloop_tag(key: str) -> bool:
    """True for tag keys written by modelloop."""
    return key.startswith(TAG_PREFIX)


__all__ = [
    "ALIAS_FOR_ROLE",
    "BASELINE_METRIC_PREFIX",
    "CHALLENGER_ALIAS",
    "DEPLOYMENTS_EXPERIMENT",
    "MODEL_ARTIFACT_PATH",
    "MONITORING_EXPERIMENT",
    "PARAM_DIRECTION",
    "PARAM_METRIC",
    "PARAM_TARGET",
    "PARAM_TASK",
    "PRODUCTION_ALIAS",
    "PRODUCTION_METRIC_PREFIX",
    "REFERENCE_PROFILE_PATH",
    "REFERENCE_PROFILE_SUMMARY_PATH",
    "RESOLVED_CONFIG_PATH",
    "STAGE_FOR_ROLE",
    "TAG_CONFIG_PATH",
    "TAG_DEPLOY_BINDING",
    "TAG_GATE",
    "TAG_GATE_MARGIN",
    "TAG_GATE_PRODUCTION",
    "TAG_GATE_REASONS",
    "TAG_MONITOR_DRIFTED",
    "TAG_MONITOR_MODEL",
    "TAG_MONITOR_NO_DRIFT_REASON",
    "TAG_MONITOR_STATUS",
    "TAG_MONITOR_WINDOW",
    "TAG_PREFIX",
    "TAG_PROFILED_AT",
    "TAG_PROFILE_SOURCE",
    "TAG_QUALITY_BREACHED",
    "TAG_RETRAIN_CAUSE",
    "TAG_RETRAIN_DECISION",
    "TAG_RETRAIN_DETAIL",
    "TAG_RETRAIN_FIRED_AT",
    "TAG_RETRAIN_LAUNCHED",
    "TAG_RETRAIN_MONITORING_RUN",
    "TAG_RETRAIN_PREFIX",
    "TAG_RETRAIN_REPLACED_RUN",
    "TAG_RETRAIN_RERUN_DECISION",
    "TAG_RETRAIN_STREAK",
    "TAG_ROLLOUT",
    "TAG_ROLLOUT_ADDRESS",
    "TAG_ROLLOUT_BINDING",
    "TAG_ROLLOUT_REASON",
    "TAG_ROLLOUT_RECORD_ID",
    "TAG_ROLLOUT_SERVING_FROM",
    "TAG_ROLLOUT_SERVING_UNTIL",
    "TAG_ROLLOUT_TARGET",
    "TAG_RUN_KIND",
    "TAG_TRAINING_RUN",
    "TAG_TRIGGERED_BY",
    "TAG_TRIGGERED_BY_CAUSE",
    "TAG_TRIGGERED_BY_FIRED_AT",
    "TEST_METRIC_PREFIX",
    "Role",
    "Route",
    "is_modelloop_tag",
]
