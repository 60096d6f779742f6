"""Monitoring records in MLflow: one run per (model, window) in the monitoring experiment, through one
`MlflowClient` (no global MLflow state). The only monitoring module that imports `mlflow`.

Wired by the CLI (`modelloop monitor`, the local platform); implements `monitoring.records.MonitoringRecords`
(see its contract). A window's runs are found by the model and window tags; the history is ordered by the
`window.end` metric. MLflow's errors are classified once, by `modelloop.adapters.mlflow_errors`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, Run, RunTag
from mlflow.exceptions import MlflowException
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NOTE

from modelloop.adapters import mlflow_filters as filters
from modelloop.adapters.mlflow_errors import classify, is_not_found
from modelloop.adapters.mlflow_experiments import ensure_experiment
from modelloop.contract.errors import ModelloopError, clip, public_uri
from modelloop.contract.registry import (
    MONITORING_EXPERIMENT,
    TAG_MONITOR_MODEL,
    TAG_MONITOR_WINDOW,
)
from modelloop.monitoring.records import (
    FAILED,
    FINISHED,
    METRIC_WINDOW_END,
    MonitoringRecords,
    WindowRun,
    run_tags,
    window_record,
)
from modelloop.monitoring.trigger import WindowRecord

#: Most metrics MLflow takes in one batch; most characters of a param value.
_BATCH, _PARAM_CHARS = 1000, 6000
#: Most runs of one (model, window) read back (a window has one, plus failed runs not yet replaced).
_WINDOW_RUNS = 100


class MlflowMonitoringRecords(MonitoringRecords):
    """Window runs in the monitoring experiment of the MLflow tracking server at `tracking_uri`."""

    def __init__(self, tracking_uri: str) -> None:
        self._tracking_uri = tracking_uri
        self._where = f"MLflow at {public_uri(tracking_uri)}"
        self._client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        self._experiment_id: str | None = None

    @property
    def tracking_uri(self) -> str:
        return self._tracking_uri

    def experiment_id(self) -> str:
        """The monitoring experiment's id (created on first use)."""
        if self._experiment_id is None:
            try:  # a model-training experiment, so the MLflow UI shows its runs (not traces)
                self._experiment_id = ensure_experiment(self._client, MONITORING_EXPERIMENT)
            except (MlflowException, OSError) as exc:
                raise self._error(exc, f"reading experiment {MONITORING_EXPERIMENT}") from None
        return self._experiment_id

    def _error(self, exc: Exception, doing: str, *, lookup: bool = False) -> ModelloopError:
        """The port's error for an MLflow or transport failure while `doing`."""
        return classify(exc, doing, where=self._where, lookup=lookup)

    # --- reads -------------------------------------------------------------------------------------------
    def window_runs(self, model: str, window_id: str) -> list[WindowRun]:
        wanted = {TAG_MONITOR_MODEL: model, TAG_MONITOR_WINDOW: window_id}
        return [
            WindowRun(r.info.run_id, str(r.info.status), r.data.tags, r.data.params, r.data.metrics)
            for r in self._search(model, wanted, limit=_WINDOW_RUNS)
        ]

    def history(self, model: str, *, limit: int = 200) -> list[WindowRecord]:
        runs = self._search(model, {TAG_MONITOR_MODEL: model}, limit=limit, newest_first=True)
        return [window_record(r.data.tags, r.data.params, r.data.metrics) for r in runs]

    def _search(
        self, model: str, tags: Mapping[str, str], *, limit: int, newest_first: bool = False
    ) -> list[Run]:
        """The runs (not deleted) of the monitoring experiment whose tags hold exactly `tags`."""
        flt = " and ".join(filters.equals(filters.tag(key), value) for key, value in tags.items())
        order = [f"metrics.`{METRIC_WINDOW_END}` DESC"] if newest_first else None
        try:
            runs = self._client.search_runs([self.experiment_id()], flt, max_results=limit, order_by=order)
        except (MlflowException, OSError) as exc:
            raise self._error(exc, f"searching the runs of model {clip(model)}") from None
        return [r for r in runs if all(r.data.tags.get(k) == v for k, v in tags.items())]

    def artifact_paths(self, run_id: str) -> list[str]:
        paths: list[str] = []
        folders: list[str | None] = [None]
        try:
            self._client.get_run(run_id)
            while folders:
                for item in self._client.list_artifacts(run_id, folders.pop()):
                    (folders if item.is_dir else paths).append(item.path)
        except (MlflowException, OSError) as exc:
            raise self._error(exc, f"listing the artifacts of run {run_id}", lookup=True) from None
        return sorted(paths)

    # --- writes ------------------------------------------------------------------------------------------
    def start_run(
        self, model: str, window_id: str, tags: Mapping[str, str], *, name: str | None = None
    ) -> str:
        all_tags = run_tags(model, window_id, tags)
        try:
            run = self._client.create_run(
                self.experiment_id(), tags=all_tags, run_name=name or f"{model} {window_id}"
            )
        except (MlflowException, OSError) as exc:
            raise self._error(exc, f"creating a run of model {clip(model)}") from None
        return str(run.info.run_id)

    def log(
        self,
        run_id: str,
        *,
        metrics: Mapping[str, float] | None = None,
        params: Mapping[str, str] | None = None,
        tags: Mapping[str, str] | None = None,
        timestamp_ms: int = 0,
    ) -> None:
        ms = [Metric(k, float(v), timestamp_ms, 0) for k, v in (metrics or {}).items()]
        ps = [Param(k, str(v)[:_PARAM_CHARS]) for k, v in (params or {}).items()]
        ts = [RunTag(k, str(v)) for k, v in (tags or {}).items()]
        try:
            for i in range(0, max(len(ms), 1), _BATCH):
                first = i == 0
                self._client.log_batch(
                    run_id, metrics=ms[i : i + _BATCH], params=ps if first else [], tags=ts if first else []
                )
        except (MlflowException, OSError) as exc:
            raise self._error(exc, f"logging to run {run_id}") from None

    def describe(self, run_id: str, description: str) -> None:
        try:
            self._client.set_tag(run_id, MLFLOW_RUN_NOTE, description)
        except (MlflowException, OSError) as exc:
            raise self._error(exc, f"describing run {run_id}") from None

    def log_table(self, run_id: str, path: str, rows: Sequence[Mapping[str, Any]]) -> None:
        import pandas as pd

        try:
            self._client.log_table(run_id, pd.DataFrame(list(rows)), path)
        except (MlflowException, OSError) as exc:
            raise self._error(exc, f"logging table {path} to run {run_id}") from None

    def log_artifacts(self, run_id: str, folder: Path) -> None:
        try:
            self._client.log_artifacts(run_id, str(folder))
        except (MlflowException, OSError) as exc:
            raise self._error(exc, f"uploading the artifacts of run {run_id}") from None

    def finish(self, run_id: str, *, failed: bool = False) -> None:
        try:
            self._client.set_terminated(run_id, FAILED if failed else FINISHED)
        except (MlflowException, OSError) as exc:
            raise self._error(exc, f"ending run {run_id}") from None

    def delete_runs(self, run_ids: Sequence[str]) -> None:
        for run_id in run_ids:
            try:
                self._client.delete_run(run_id)
            except (MlflowException, OSError) as exc:
                if not is_not_found(exc, lookup=True):
                    raise self._error(exc, f"deleting run {run_id}") from None


__all__ = ["MlflowMonitoringRecords"]
