"""Each Optuna trial as a nested MLflow run, written in batches off the tuning thread.

The study calls `TrialRecorder` (an Optuna callback) when a trial finishes; the recorder only queues a small
record, and a background thread writes queued trials as nested runs of the training's parent run (params, the
validation score and its per-stage history, state, start/end time, worker). A pruned trial did what it was
asked (the pruner stopped it early on purpose): its run ends FINISHED, tagged `modelloop.trial.pruned=true`
(KILLED would show it as an interrupted run); a failed one ends FAILED. This keeps MLflow bookkeeping from
dominating tuning (see bench/training.py):

- `SqlTrialSink` writes a whole batch of runs in one transaction when the tracking URI is a SQL database
  (sqlite:///, postgresql://), through MLflow's own ORM models of the store;
- `ClientTrialSink` uses the public client (create run, log batch, terminate) for an MLflow server.

Nothing is dropped silently: the buffer is bounded (the study waits when it is full), a failed batch is
retried once, and trials that still cannot be written are counted in `RecorderStats` and reported.
"""

from __future__ import annotations

import getpass
import logging
import math
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import optuna
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunStatus
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

from modelloop.contract.registry import TAG_RUN_KIND

log = logging.getLogger(__name__)

TAG_TRIAL_NUMBER = "modelloop.trial.number"
TAG_TRIAL_STATE = "modelloop.trial.state"
TAG_TRIAL_WORKER = "modelloop.trial.worker"
TAG_TRIAL_ERROR = "modelloop.trial.error"
TAG_TRIAL_PRUNED = "modelloop.trial.pruned"  # "true" on a trial the pruner stopped early
#: Optuna user attribute naming the process that ran a trial (set by the objective).
WORKER_ATTR = "worker"
ERROR_ATTR = "error"

_DONE = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
#: Metric on the parent run: finished trials of the study, stepped by that count (one point per trial).
METRIC_TRIALS_DONE = "trials.done"
_MLFLOW_STATUS = {"COMPLETE": "FINISHED", "PRUNED": "FINISHED", "FAIL": "FAILED"}
_MAX_PARAM = 6000


@dataclass(frozen=True)
class TrialRecord:
    """What one finished trial leaves in MLflow."""

    number: int
    state: str  # COMPLETE | PRUNED | FAIL
    params: dict[str, str]
    value: float | None
    intermediate: dict[int, float]
    start_ms: int
    end_ms: int
    worker: str
    error: str | None
    done: int = 0  # finished (complete or pruned) trials in the study when this one finished; 0 if it failed

    @classmethod
    def from_trial(cls, trial: optuna.trial.FrozenTrial, *, done: int = 0) -> TrialRecord:
        start = trial.datetime_start.timestamp() if trial.datetime_start else time.time()
        end = trial.datetime_complete.timestamp() if trial.datetime_complete else time.time()
        return cls(
            number=trial.number,
            state=trial.state.name,
            params={k: str(v)[:_MAX_PARAM] for k, v in trial.params.items()},
            value=trial.value if trial.state == optuna.trial.TrialState.COMPLETE else None,
            intermediate=dict(trial.intermediate_values),
            start_ms=int(start * 1000),
            end_ms=int(end * 1000),
            worker=str(trial.user_attrs.get(WORKER_ATTR, "")),
            error=trial.user_attrs.get(ERROR_ATTR),
            done=done if trial.state in _DONE else 0,
        )

    def tags(self, parent_run_id: str) -> dict[str, str]:
        tags = {
            MLFLOW_PARENT_RUN_ID: parent_run_id,
            MLFLOW_RUN_NAME: self.run_name,
            TAG_RUN_KIND: "trial",
            TAG_TRIAL_NUMBER: str(self.number),
            TAG_TRIAL_STATE: self.state,
        }
        if self.state == "PRUNED":
            tags[TAG_TRIAL_PRUNED] = "true"
        if self.worker:
            tags[TAG_TRIAL_WORKER] = self.worker
        if self.error:
            tags[TAG_TRIAL_ERROR] = self.error[:5000]
        return tags

    def metrics(self, metric: str) -> list[tuple[str, float, int, int]]:
        """(key, value, timestamp, step) rows: the score, and its per-stage history when there is one."""
        rows: list[tuple[str, float, int, int]] = []
        if self.value is not None:
            rows.append((f"validation.{metric}", float(self.value), self.end_ms, 0))
        rows += [
            (f"validation.{metric}.by_stage", float(v), self.end_ms, s)
            for s, v in sorted(self.intermediate.items())
        ]
        return rows

    @property
    def run_name(self) -> str:
        return f"trial-{self.number:04d}"

    @property
    def status(self) -> str:
        return _MLFLOW_STATUS.get(self.state, "FAILED")


class TrialSink(Protocol):
    """Writes finished trials as nested runs. Called from one background thread; may raise on failure."""

    def write(self, records: Sequence[TrialRecord]) -> None: ...


class ClientTrialSink:
    """Nested runs through the MLflow client (any tracking URI, e.g. an MLflow server): three requests per
    trial. A run ends through the client's store, not `set_terminated`, which on a server fetches the whole
    run again only to print its UI link (a fourth request per trial, and a stdout line per trial)."""

    def __init__(self, client: MlflowClient, *, experiment_id: str, parent_run_id: str, metric: str) -> None:
        self._client = client
        self._experiment_id = experiment_id
        self._parent = parent_run_id
        self._metric = metric

    def write(self, records: Sequence[TrialRecord]) -> None:
        for rec in records:
            run = self._client.create_run(
                self._experiment_id, start_time=rec.start_ms, tags=rec.tags(self._parent)
            )
            run_id = run.info.run_id
            self._client.log_batch(
                run_id,
                metrics=[Metric(k, v, ts, step) for k, v, ts, step in rec.metrics(self._metric)],
                params=[Param(k, v) for k, v in rec.params.items()],
            )
            self._client._tracking_client.store.update_run_info(
                run_id, run_status=RunStatus.from_string(rec.status), end_time=rec.end_ms, run_name=None
            )


class SqlTrialSink:
    """Nested runs written straight into a SQL-backed tracking store, one transaction per batch.

    Uses the store's own ORM models (the same rows `create_run`/`log_batch`/`set_terminated` write), so the
    runs read back through every MLflow API; tied to the MLflow version range pinned in pyproject.toml."""

    def __init__(self, store: Any, *, experiment_id: str, parent_run_id: str, metric: str) -> None:
        from mlflow.utils.uri import append_to_uri_path

        self._store = store
        self._experiment_id = int(experiment_id)
        self._parent = parent_run_id
        self._metric = metric
        self._artifact_root = store.get_experiment(experiment_id).artifact_location
        self._user = getpass.getuser() if hasattr(getpass, "getuser") else "unknown"
        self._append = append_to_uri_path

    @staticmethod
    def for_uri(tracking_uri: str, **kwargs: Any) -> SqlTrialSink | None:
        """A SQL sink when `tracking_uri` names a database the store writes directly, else None."""
        scheme = tracking_uri.split(":", 1)[0].split("+", 1)[0]
        if scheme not in {"sqlite", "postgresql", "mysql", "mssql"}:
            return None
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
        from mlflow.tracking._tracking_service.utils import _get_store

        store = _get_store(tracking_uri)  # type: ignore[no-untyped-call]
        if not isinstance(store, SqlAlchemyStore):
            return None
        return SqlTrialSink(store, **kwargs)

    def write(self, records: Sequence[TrialRecord]) -> None:
        from mlflow.entities import LifecycleStage, SourceType
        from mlflow.store.tracking.dbmodels.models import (
            SqlLatestMetric,
            SqlMetric,
            SqlParam,
            SqlRun,
            SqlTag,
        )

        with self._store.ManagedSessionMaker(read_only=False) as session:
            for rec in records:
                run_id = uuid.uuid4().hex
                run = SqlRun(
                    name=rec.run_name,
                    artifact_uri=self._append(self._artifact_root, run_id, "artifacts"),  # type: ignore[no-untyped-call]
                    run_uuid=run_id,
                    experiment_id=self._experiment_id,
                    source_type=SourceType.to_string(SourceType.UNKNOWN),
                    source_name="",
                    entry_point_name="",
                    user_id=self._user,
                    status=rec.status,
                    start_time=rec.start_ms,
                    end_time=rec.end_ms,
                    deleted_time=None,
                    source_version="",
                    lifecycle_stage=LifecycleStage.ACTIVE,
                )
                run.tags = [SqlTag(key=k, value=v) for k, v in rec.tags(self._parent).items()]
                run.params = [SqlParam(key=k, value=v) for k, v in rec.params.items()]
                rows = rec.metrics(self._metric)
                run.metrics = [
                    SqlMetric(key=k, value=v, timestamp=ts, step=s, is_nan=math.isnan(v))
                    for k, v, ts, s in rows
                ]
                latest: dict[str, tuple[str, float, int, int]] = {}
                for row in rows:
                    if row[0] not in latest or row[3] >= latest[row[0]][3]:
                        latest[row[0]] = row
                run.latest_metrics = [
                    SqlLatestMetric(key=k, value=v, timestamp=ts, step=s, is_nan=math.isnan(v))
                    for k, v, ts, s in latest.values()
                ]
                session.add(run)


class ParentProgress:
    """Writes `trials.done` on the parent run for a batch of finished trials (value and step: the count)."""

    def __init__(self, client: MlflowClient, parent_run_id: str) -> None:
        self._client = client
        self._parent = parent_run_id

    def write(self, records: Sequence[TrialRecord]) -> None:
        metrics = [Metric(METRIC_TRIALS_DONE, float(r.done), r.end_ms, r.done) for r in records if r.done]
        if metrics:
            self._client.log_batch(self._parent, metrics=metrics)


@dataclass
class RecorderStats:
    written: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)


class TrialRecorder:
    """An Optuna callback that queues finished trials and writes them in the background.

    Thread-safe (the study may run `n_jobs` trials at once). `close()` flushes and returns what was
    written."""

    def __init__(
        self,
        sink: TrialSink,
        *,
        progress: TrialSink | None = None,
        flush_interval: float = 0.5,
        max_batch: int = 200,
        max_buffer: int = 5000,
    ) -> None:
        self._sink = sink
        self._progress = progress
        self._flush_interval = flush_interval
        self._max_batch = max_batch
        self._max_buffer = max_buffer
        self._queue: list[TrialRecord] = []
        self._cond = threading.Condition()
        self._closed = False
        self.stats = RecorderStats()
        self._thread = threading.Thread(target=self._loop, name="trial-runs", daemon=True)
        self._thread.start()

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        done = len(study.get_trials(deepcopy=False, states=_DONE)) if self._progress is not None else 0
        record = TrialRecord.from_trial(trial, done=done)
        with self._cond:
            while len(self._queue) >= self._max_buffer and not self._closed:
                self._cond.wait(0.1)  # back-pressure instead of dropping
            self._queue.append(record)
            if len(self._queue) >= self._max_batch:
                self._cond.notify_all()

    def _loop(self) -> None:
        while True:
            with self._cond:
                if len(self._queue) < self._max_batch and not self._closed:
                    self._cond.wait(self._flush_interval)  # gather a batch
                batch, self._queue = self._queue[: self._max_batch], self._queue[self._max_batch :]
                done = self._closed and not batch and not self._queue
                self._cond.notify_all()
            if batch:
                self._write(batch)
            if done:
                return

    def _write(self, batch: list[TrialRecord]) -> None:
        for attempt in (1, 2):
            try:
                self._sink.write(batch)
                self.stats.written += len(batch)
                break
            except Exception as exc:  # any store failure: retry once, then count and report
                if attempt == 2:
                    self.stats.failed += len(batch)
                    self.stats.errors.append(
                        f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
                    )
                    log.warning(
                        "could not record %d trial runs in MLflow: %s", len(batch), type(exc).__name__
                    )
                    return
                time.sleep(0.5)
        self._write_progress(batch)

    def _write_progress(self, batch: list[TrialRecord]) -> None:
        if self._progress is None:
            return
        try:
            self._progress.write(batch)
        except Exception as exc:  # progress is a convenience: a lost point is logged, not counted
            log.warning("could not record the progress of %d trials: %s", len(batch), type(exc).__name__)

    def close(self) -> RecorderStats:
        """Write everything queued and stop the background thread."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join()
        return self.stats


def make_sink(tracking_uri: str, *, experiment_id: str, parent_run_id: str, metric: str) -> TrialSink:
    """The fastest sink for a tracking URI."""
    sql = SqlTrialSink.for_uri(
        tracking_uri, experiment_id=experiment_id, parent_run_id=parent_run_id, metric=metric
    )
    if sql is not None:
        return sql
    return ClientTrialSink(
        MlflowClient(tracking_uri), experiment_id=experiment_id, parent_run_id=parent_run_id, metric=metric
    )


__all__ = [
    "ERROR_ATTR",
    "METRIC_TRIALS_DONE",
    "TAG_TRIAL_ERROR",
    "TAG_TRIAL_NUMBER",
    "TAG_TRIAL_PRUNED",
    "TAG_TRIAL_STATE",
    "TAG_TRIAL_WORKER",
    "WORKER_ATTR",
    "ClientTrialSink",
    "ParentProgress",
    "RecorderStats",
    "SqlTrialSink",
    "TrialRecord",
    "TrialRecorder",
    "TrialSink",
    "make_sink",
]
