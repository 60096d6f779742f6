"""What monitoring reads from and writes to MLflow, through one `MlflowClient` (no global MLflow state).

Called by `monitoring.job`. Reads: a version's training run, its reference profile and resolved training
config (the paths in `modelloop.contract.registry`), its test metrics; the model's recent monitoring runs; the
registered model's last-firing tags. Writes: one run per (model, window) in the monitoring experiment,
replacing any earlier run of the same window (found by the model and window tags), and the trigger tags.
"""

from __future__ import annotations

import logging
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from pydantic import ValidationError

from modelloop.contract.errors import InvalidInputError, NotFoundError, UnavailableError
from modelloop.contract.profile import ReferenceProfile
from modelloop.contract.registry import (
    MONITORING_EXPERIMENT,
    PARAM_METRIC,
    PARAM_TASK,
    REFERENCE_PROFILE_PATH,
    RESOLVED_CONFIG_PATH,
    TAG_MONITOR_MODEL,
    TAG_MONITOR_STATUS,
    TAG_MONITOR_WINDOW,
    TAG_RETRAIN_CAUSE,
    TAG_RETRAIN_FIRED_AT,
    TAG_RETRAIN_MONITORING_RUN,
    TAG_RUN_KIND,
    TEST_METRIC_PREFIX,
)
from modelloop.monitoring.trigger import LastFiring, WindowRecord

log = logging.getLogger(__name__)

#: Tag on a monitoring run: whether the policy's quality floor was breached in that window ("1"/"0").
TAG_QUALITY_BREACHED = "modelloop.monitor.quality_breached"
_BAD_KEY_CHARS = re.compile(r"[^A-Za-z0-9_\-. /]")


def metric_key(*parts: str) -> str:
    """A metric name from parts joined by dots; characters MLflow refuses become `_`."""
    return ".".join(_BAD_KEY_CHARS.sub("_", p) for p in parts)


@dataclass(frozen=True)
class Reference:
    """A model version's training-time facts that monitoring compares against."""

    model_name: str
    version: str
    training_run_id: str
    profile: ReferenceProfile
    metric: str | None  # the training metric (e.g. "roc_auc")
    test_metrics: dict[str, float]  # "accuracy" -> value on the test set


def _unavailable(what: str, exc: Exception) -> UnavailableError:
    return UnavailableError(f"MLflow {what} failed ({type(exc).__name__})")


def _not_found(exc: MlflowException) -> bool:
    return exc.error_code in {"RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"}


class MonitoringTracker:
    """Monitoring's view of the MLflow tracking server and registry at `tracking_uri`."""

    def __init__(self, tracking_uri: str) -> None:
        self.tracking_uri = tracking_uri
        self._client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        self._experiment_id: str | None = None
        self._references: dict[tuple[str, str], Reference] = {}

    @property
    def client(self) -> MlflowClient:
        return self._client

    def experiment_id(self) -> str:
        if self._experiment_id is None:
            try:
                exp = self._client.get_experiment_by_name(MONITORING_EXPERIMENT)
                self._experiment_id = (
                    exp.experiment_id
                    if exp is not None
                    else self._client.create_experiment(MONITORING_EXPERIMENT)
                )
            except MlflowException as exc:
                if exc.error_code == "RESOURCE_ALREADY_EXISTS":  # created concurrently
                    exp = self._client.get_experiment_by_name(MONITORING_EXPERIMENT)
                    assert exp is not None
                    self._experiment_id = exp.experiment_id
                else:
                    raise _unavailable("experiment lookup", exc) from None
        return self._experiment_id

    def reference(self, model_name: str, version: str) -> Reference:
        """The version's training run facts and reference profile (cached per version)."""
        key = (model_name, version)
        if key in self._references:
            return self._references[key]
        try:
            mv = self._client.get_model_version(model_name, version)
            run = self._client.get_run(mv.run_id) if mv.run_id else None
        except MlflowException as exc:
            if _not_found(exc):
                raise NotFoundError(f"model {model_name!r} version {version} is not registered") from None
            raise _unavailable("registry read", exc) from None
        if run is None:
            raise NotFoundError(f"model {model_name!r} version {version} has no training run")
        text = self.artifact_text(run.info.run_id, REFERENCE_PROFILE_PATH)
        try:
            profile = ReferenceProfile.model_validate_json(text)
        except ValidationError:
            raise InvalidInputError(
                f"reference profile of model {model_name!r} version {version} does not match the schema"
            ) from None
        metrics = {
            k.removeprefix(TEST_METRIC_PREFIX): float(v)
            for k, v in run.data.metrics.items()
            if k.startswith(TEST_METRIC_PREFIX)
        }
        ref = Reference(
            model_name,
            version,
            run.info.run_id,
            profile,
            run.data.params.get(PARAM_METRIC),
            metrics,
        )
        if run.data.params.get(PARAM_TASK) not in {None, profile.task}:
            log.warning("model %s version %s: training task and profile task differ", model_name, version)
        self._references[key] = ref
        return ref

    def artifact_text(self, run_id: str, path: str) -> str:
        """The text of one artifact of a run; `NotFoundError` when it is missing."""
        with tempfile.TemporaryDirectory(prefix="modelloop-monitor-") as tmp:
            try:
                local = self._client.download_artifacts(run_id, path, tmp)
            except MlflowException as exc:
                if _not_found(exc):
                    raise NotFoundError(f"run {run_id} has no artifact {path}") from None
                raise _unavailable("artifact download", exc) from None
            except OSError:
                raise NotFoundError(f"run {run_id} has no artifact {path}") from None
            return Path(local).read_text(encoding="utf-8")

    def training_config(self, reference: Reference) -> str:
        """The resolved training config the version's training run logged."""
        return self.artifact_text(reference.training_run_id, RESOLVED_CONFIG_PATH)

    # ----- monitoring runs

    def window_runs(self, model_name: str, window_id: str) -> list[str]:
        """Ids of the active monitoring runs recorded for (model, window)."""
        return list(self.window_run_tags(model_name, window_id))

    def window_recorded(self, model_name: str, window_id: str) -> bool:
        """Whether (model, window) has a finished monitoring run (a failed or unfinished one does not
        count: a scheduler measures that window again, and the new run replaces it)."""
        return any(status == "FINISHED" for status, _ in self._window_runs(model_name, window_id).values())

    def window_run_tags(self, model_name: str, window_id: str) -> dict[str, dict[str, str]]:
        """The active monitoring runs recorded for (model, window): run id -> its tags."""
        return {run_id: tags for run_id, (_, tags) in self._window_runs(model_name, window_id).items()}

    def _window_runs(self, model_name: str, window_id: str) -> dict[str, tuple[str, dict[str, str]]]:
        flt = (
            f"tags.`{TAG_MONITOR_MODEL}` = '{_quote(model_name)}' "
            f"and tags.`{TAG_MONITOR_WINDOW}` = '{window_id}'"
        )
        try:
            runs = self._client.search_runs([self.experiment_id()], flt, max_results=100)
        except MlflowException as exc:
            raise _unavailable("run search", exc) from None
        return {r.info.run_id: (str(r.info.status), dict(r.data.tags)) for r in runs}

    def history(self, model_name: str, *, limit: int = 200) -> list[WindowRecord]:
        """The model's most recent monitoring windows (newest first)."""
        flt = f"tags.`{TAG_MONITOR_MODEL}` = '{_quote(model_name)}'"
        try:
            runs = self._client.search_runs(
                [self.experiment_id()], flt, max_results=limit, order_by=["metrics.`window.end` DESC"]
            )
        except MlflowException as exc:
            raise _unavailable("run search", exc) from None
        records = []
        for run in runs:
            tags, metrics, params = run.data.tags, run.data.metrics, run.data.params
            records.append(
                WindowRecord(
                    window_id=tags.get(TAG_MONITOR_WINDOW, ""),
                    end=float(metrics.get("window.end", 0.0)),
                    version=params.get("model_version") or None,
                    status=tags.get(TAG_MONITOR_STATUS, "ok"),
                    rows=int(metrics.get("window.rows", 0)),
                    share_drifted=metrics.get("drift.share_drifted"),
                    quality_breached=tags.get(TAG_QUALITY_BREACHED) == "1",
                )
            )
        return records

    def share_history(self, model_name: str, *, limit: int = 50) -> list[tuple[float, float | None, str]]:
        """(window end, share of drifted features, status) of the model's recent windows, oldest first."""
        return sorted((r.end, r.share_drifted, r.status) for r in self.history(model_name, limit=limit))

    def start_run(self, model_name: str, window_id: str, tags: Mapping[str, str]) -> str:
        all_tags = {
            TAG_RUN_KIND: "monitoring",
            TAG_MONITOR_MODEL: model_name,
            TAG_MONITOR_WINDOW: window_id,
            **tags,
        }
        try:
            run = self._client.create_run(
                self.experiment_id(), tags=all_tags, run_name=f"{model_name} {window_id}"
            )
        except MlflowException as exc:
            raise _unavailable("run creation", exc) from None
        return str(run.info.run_id)

    def log(
        self,
        run_id: str,
        *,
        metrics: Mapping[str, float] = {},
        params: Mapping[str, str] = {},
        tags: Mapping[str, str] = {},
        timestamp_ms: int = 0,
    ) -> None:
        """Log metrics, params and tags in batches MLflow accepts."""
        ms = [Metric(k, float(v), timestamp_ms, 0) for k, v in metrics.items()]
        ps = [Param(k, str(v)[:6000]) for k, v in params.items()]
        ts = [RunTag(k, str(v)) for k, v in tags.items()]
        try:
            for i in range(0, max(len(ms), 1), 1000):
                self._client.log_batch(
                    run_id, metrics=ms[i : i + 1000], params=ps if i == 0 else [], tags=ts if i == 0 else []
                )
        except MlflowException as exc:
            raise _unavailable("run logging", exc) from None

    def log_artifacts(self, run_id: str, folder: Path) -> None:
        try:
            self._client.log_artifacts(run_id, str(folder))
        except (MlflowException, OSError) as exc:
            raise _unavailable("artifact upload", exc) from None

    def finish(self, run_id: str, *, failed: bool = False) -> None:
        try:
            self._client.set_terminated(run_id, "FAILED" if failed else "FINISHED")
        except MlflowException as exc:
            raise _unavailable("run update", exc) from None

    def delete_runs(self, run_ids: list[str]) -> None:
        for run_id in run_ids:
            try:
                self._client.delete_run(run_id)
            except MlflowException as exc:
                if not _not_found(exc):
                    raise _unavailable("run deletion", exc) from None

    # ----- trigger state on the registered model and version

    def last_firing(self, model_name: str) -> LastFiring | None:
        try:
            tags = self._client.get_registered_model(model_name).tags
        except MlflowException as exc:
            if _not_found(exc):
                raise NotFoundError(f"model {model_name!r} is not registered") from None
            raise _unavailable("registry read", exc) from None
        cause, at = tags.get(TAG_RETRAIN_CAUSE), tags.get(TAG_RETRAIN_FIRED_AT)
        if not cause or at is None:
            return None
        return LastFiring(cause, float(at))

    def repoint_firing(self, model_name: str, version: str | None, old_run: str, new_run: str) -> None:
        """After a re-run replaced the monitoring run that fired, point the registry's tags at the new run."""
        try:
            model_tags = self._client.get_registered_model(model_name).tags
            if model_tags.get(TAG_RETRAIN_MONITORING_RUN) == old_run:
                self._client.set_registered_model_tag(model_name, TAG_RETRAIN_MONITORING_RUN, new_run)
            if (
                version
                and self._client.get_model_version(model_name, version).tags.get(TAG_RETRAIN_MONITORING_RUN)
                == old_run
            ):
                self._client.set_model_version_tag(model_name, version, TAG_RETRAIN_MONITORING_RUN, new_run)
        except MlflowException as exc:
            raise _unavailable("registry tagging", exc) from None

    def record_firing(self, model_name: str, version: str, tags: Mapping[str, str]) -> None:
        """Tag the registered model (last firing) and the version the retraining was about."""
        try:
            for key, value in tags.items():
                self._client.set_registered_model_tag(model_name, key, value)
                self._client.set_model_version_tag(model_name, version, key, value)
        except MlflowException as exc:
            raise _unavailable("registry tagging", exc) from None


def _quote(text: str) -> str:
    return text.replace("'", "\\'")


__all__ = ["TAG_QUALITY_BREACHED", "MonitoringTracker", "Reference", "metric_key"]
