"""Writing a deployment run to MLflow: one run per rollout in the deployments experiment.

Called by `modelloop.deploy.registry.MlflowRegistry.record_rollout`, which decides what a run carries (the
params, the tags, the `rollout.seconds` metric, the timeline's JSON and plot as files in a folder) and
retries; this module only writes it. Writing is idempotent by the record id: the run is tagged with it when
created (`TAG_ROLLOUT_RECORD_ID`), and a second write with the same id (a retry after a failure half-way)
finds that run and continues it instead of starting another. The experiment is created on first use, as a
model-training experiment (`adapters.mlflow_experiments`). The params a deployment run carries are named here
(`PARAM_*`), for the writer (`deploy.registry`) and the reader (`adapters.mlflow_version_story`).

Failures become the registry port's errors through `adapters.mlflow_errors` (unreachable ->
UnavailableError, refused -> RegistryRefusedError), with the message "... while writing a rollout record".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from modelloop.contract.registry import DEPLOYMENTS_EXPERIMENT, TAG_ROLLOUT_RECORD_ID

from . import mlflow_errors, mlflow_filters
from .mlflow_experiments import ensure_experiment
from .mlflow_registry import MlflowModelRegistry

if TYPE_CHECKING:
    from mlflow import MlflowClient


@dataclass(frozen=True)
class DeploymentRun:
    """What one deployment run carries."""

    record_id: str  # the rollout record's id: writing the same id again continues the same run
    name: str
    params: Mapping[str, str]
    tags: Mapping[str, str]  # set when the run is created and again on every write
    metrics: Mapping[str, float] = field(default_factory=dict)
    metrics_time_ms: int = 0  # the timestamp of the metrics
    artifacts: Path | None = None  # a folder: every file under it is logged, keeping its relative path
    failed: bool = False  # the run ends FAILED (else FINISHED)
    description: str = ""  # markdown shown as the run's description in the MLflow UI


#: what a failure's message says was being done
DOING = "writing a rollout record"

# The params of a deployment run.
PARAM_BINDING = "binding"
PARAM_MODEL = "model"
PARAM_FROM_VERSION = "from_version"  # "" for a first rollout
PARAM_TO_VERSION = "to_version"
PARAM_OUTCOME = "outcome"  # "serving" | "failed"
PARAM_TARGET = "target"  # "local" | "kubernetes"
PARAM_ADDRESS = "address"  # the gRPC address the binding answers on
PARAM_AT = "at"  # when the rollout ended (ISO-8601 UTC): the new version's first moment serving


class MlflowRolloutRuns:
    """Deployment runs on the registry's tracking server (safe from several threads)."""

    def __init__(self, registry: MlflowModelRegistry, *, experiment: str = DEPLOYMENTS_EXPERIMENT) -> None:
        self._client = registry.client
        self._where = registry.where
        self._experiment = experiment

    def write(self, run: DeploymentRun) -> str:
        """Write `run` (see the module docstring); returns its MLflow run id."""
        try:
            return self._write(run)
        except Exception as exc:
            if mlflow_errors.kind_of(exc) is None:
                raise
            raise mlflow_errors.classify(exc, DOING, where=self._where) from None

    def _write(self, run: DeploymentRun) -> str:
        from mlflow.entities import Metric, Param, RunTag
        from mlflow.utils.mlflow_tags import MLFLOW_RUN_NOTE

        client = self._client
        exp_id = ensure_experiment(client, self._experiment)
        run_id = self._existing(client, exp_id, run.record_id)
        if run_id is None:
            tags = {**run.tags, TAG_ROLLOUT_RECORD_ID: run.record_id}
            run_id = str(client.create_run(exp_id, run_name=run.name, tags=tags).info.run_id)
        client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), run.metrics_time_ms, 0) for k, v in run.metrics.items()],
            params=[Param(k, v) for k, v in run.params.items()],
            tags=[RunTag(k, v) for k, v in run.tags.items()]
            + ([RunTag(MLFLOW_RUN_NOTE, run.description)] if run.description else []),
        )
        if run.artifacts is not None:
            client.log_artifacts(run_id, str(run.artifacts))
        client.set_terminated(run_id, status="FAILED" if run.failed else "FINISHED")
        return run_id

    @staticmethod
    def _existing(client: MlflowClient, experiment_id: str, record_id: str) -> str | None:
        """The run already tagged with `record_id` (a retry after a half-written attempt), or None."""
        flt = mlflow_filters.equals(mlflow_filters.tag(TAG_ROLLOUT_RECORD_ID), record_id)
        found = client.search_runs([experiment_id], flt, max_results=1)
        return str(found[0].info.run_id) if found else None


__all__ = [
    "DOING",
    "PARAM_ADDRESS",
    "PARAM_AT",
    "PARAM_BINDING",
    "PARAM_FROM_VERSION",
    "PARAM_MODEL",
    "PARAM_OUTCOME",
    "PARAM_TARGET",
    "PARAM_TO_VERSION",
    "DeploymentRun",
    "MlflowRolloutRuns",
]
