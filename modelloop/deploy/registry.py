"""The registry port the controller reads from and writes back to, and its MLflow implementation.

Called by `modelloop.deploy.reconcile`. The port promises:
- `resolve` returns the version an alias names now, falling back to a deprecated stage, or None when neither
  names one (or the model does not exist);
- `set_version_tags` sets tags on one version;
- `record_rollout` logs one run per rollout in `DEPLOYMENTS_EXPERIMENT` with the rollout's timeline (JSON and
  a plot); writing the same record again (a retry after a failure half-way) leaves one run, not two;
- every method raises `TemporaryError` when the registry cannot be reached (after a short retry with backoff),
  never a transport exception. Implementations are safe to call from several threads.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from modelloop.contract.registry import DEPLOYMENTS_EXPERIMENT, TAG_RUN_KIND

from .errors import PermanentError, TemporaryError

log = logging.getLogger(__name__)

T = TypeVar("T")

# what a deployment run carries (besides the params binding, model, from_version, to_version, outcome and
# the metric rollout.seconds)
RUN_TAG_BINDING = "modelloop.binding"
RUN_TAG_REASON = "modelloop.rollout.reason"
RUN_TAG_RECORD_ID = "modelloop.rollout.record_id"
TIMELINE_JSON_PATH = "modelloop/rollout_timeline.json"
TIMELINE_PLOT_PATH = "modelloop/rollout_timeline.png"


@dataclass(frozen=True)
class RolloutRecord:
    """What happened in one rollout of one binding, written back to the registry."""

    binding: str
    model: str
    from_version: str | None
    to_version: str
    outcome: str  # "serving" | "failed"
    reason: str = ""
    timeline: list[tuple[float, str]] = field(default_factory=list)  # (unix time, event)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)  # makes writing it again idempotent

    def describe(self) -> str:
        return f"the record of {self.binding}'s rollout of {self.model}/{self.to_version}"


class Registry(ABC):
    """What the controller needs from a model registry (see the module docstring for the contract)."""

    @abstractmethod
    def resolve(self, model: str, *, alias: str, stage: str | None = None) -> str | None:
        """The version `alias` names now; else the newest version in `stage`; else None."""

    @abstractmethod
    def version_tags(self, model: str, version: str) -> dict[str, str]:
        """Tags of one version (empty when it does not exist)."""

    @abstractmethod
    def set_version_tags(self, model: str, version: str, tags: dict[str, str]) -> None:
        """Set tags on one version."""

    @abstractmethod
    def record_rollout(self, record: RolloutRecord) -> None:
        """Log one deployment run with the timeline."""


class MlflowRegistry(Registry):
    """The registry port over `mlflow.MlflowClient`.

    MLflow's own HTTP retries are governed by `MLFLOW_HTTP_REQUEST_MAX_RETRIES` / `..._TIMEOUT`, bounded by
    the entry point (`modelloop.cli.errors.MlflowBounds`; MLflow's default waits about 4 minutes); on top,
    each call is tried `attempts` times with exponential backoff, then `TemporaryError`.
    """

    def __init__(self, tracking_uri: str, *, attempts: int = 3, backoff: float = 0.5) -> None:
        from mlflow import MlflowClient

        self.tracking_uri = tracking_uri
        self._client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        self._attempts = attempts
        self._backoff = backoff

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        from mlflow.exceptions import MlflowException, RestException

        delay = self._backoff
        for attempt in range(1, self._attempts + 1):
            try:
                return fn()
            except RestException as exc:
                status = int(exc.get_http_status_code())  # type: ignore[no-untyped-call]
                if status < 500:
                    raise PermanentError(f"registry refused {what}: {exc.error_code}") from None
                problem = f"HTTP {status}"
            except (MlflowException, OSError) as exc:
                problem = type(exc).__name__
            log.warning("registry %s failed (%s), attempt %d/%d", what, problem, attempt, self._attempts)
            if attempt < self._attempts:
                time.sleep(delay)
                delay *= 2
        raise TemporaryError(f"MLflow at {self.tracking_uri} unreachable during {what}", delay=delay)

    def resolve(self, model: str, *, alias: str, stage: str | None = None) -> str | None:
        from mlflow.exceptions import RestException

        def by_alias() -> str | None:
            try:
                return str(self._client.get_model_version_by_alias(model, alias).version)
            except RestException as exc:
                if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                    return None
                raise

        version = self._call(f"resolve {model}@{alias}", by_alias)
        if version is not None or stage is None:
            return version

        def by_stage() -> str | None:
            try:
                with warnings.catch_warnings():  # stages are deprecated; honouring them is the point here
                    warnings.simplefilter("ignore", FutureWarning)
                    found = self._client.get_latest_versions(model, stages=[stage])
            except RestException as exc:
                if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                    return None
                raise
            return str(max(int(v.version) for v in found)) if found else None

        return self._call(f"resolve {model} stage {stage}", by_stage)

    def version_tags(self, model: str, version: str) -> dict[str, str]:
        from mlflow.exceptions import RestException

        def get() -> dict[str, str]:
            try:
                return dict(self._client.get_model_version(model, version).tags)
            except RestException as exc:
                if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                    return {}
                raise

        return self._call(f"read tags of {model}/{version}", get)

    def set_version_tags(self, model: str, version: str, tags: dict[str, str]) -> None:
        def put() -> None:
            for key, value in tags.items():
                self._client.set_model_version_tag(model, version, key, value)

        self._call(f"tag {model}/{version}", put)

    def record_rollout(self, record: RolloutRecord) -> None:
        from mlflow.entities import Metric, Param, RunTag

        figure = None
        if record.timeline:
            from .rollout_plot import timeline_figure

            figure = timeline_figure(
                record.timeline,
                title=f"{record.binding}: {record.model} v{record.from_version or '-'} -> "
                f"v{record.to_version} ({record.outcome})",
                succeeded=record.outcome == "serving",
            )

        def log_run() -> None:
            exp = self._client.get_experiment_by_name(DEPLOYMENTS_EXPERIMENT)
            exp_id = exp.experiment_id if exp else self._client.create_experiment(DEPLOYMENTS_EXPERIMENT)
            # a retry after a half-written attempt continues that run instead of starting a second one
            found = self._client.search_runs(
                [exp_id], f"tags.`{RUN_TAG_RECORD_ID}` = '{record.id}'", max_results=1
            )
            if found:
                rid = found[0].info.run_id
            else:
                rid = self._client.create_run(
                    exp_id,
                    run_name=f"{record.binding}-v{record.to_version}",
                    tags={
                        TAG_RUN_KIND: "deployment",
                        RUN_TAG_BINDING: record.binding,
                        RUN_TAG_RECORD_ID: record.id,
                    },
                ).info.run_id
            params = {
                "binding": record.binding,
                "model": record.model,
                "from_version": record.from_version or "",
                "to_version": record.to_version,
                "outcome": record.outcome,
            }
            tags = [RunTag(RUN_TAG_REASON, record.reason[:4000])] if record.reason else []
            metrics = []
            if record.timeline:
                start = record.timeline[0][0]
                seconds = record.timeline[-1][0] - start
                metrics = [Metric("rollout.seconds", seconds, int(record.timeline[-1][0] * 1000), 0)]
            self._client.log_batch(
                rid, metrics=metrics, params=[Param(k, v) for k, v in params.items()], tags=tags
            )
            if record.timeline:
                self._client.log_text(
                    rid,
                    json.dumps(
                        [{"time": t, "offset_s": round(t - start, 3), "event": e} for t, e in record.timeline]
                    ),
                    TIMELINE_JSON_PATH,
                )
            if figure is not None:
                self._client.log_figure(rid, figure, TIMELINE_PLOT_PATH)
            self._client.set_terminated(rid, status="FINISHED" if record.outcome == "serving" else "FAILED")

        self._call(f"record rollout of {record.binding}", log_run)


__all__ = [
    "RUN_TAG_BINDING",
    "RUN_TAG_REASON",
    "RUN_TAG_RECORD_ID",
    "TIMELINE_JSON_PATH",
    "TIMELINE_PLOT_PATH",
    "MlflowRegistry",
    "Registry",
    "RolloutRecord",
]
