"""In-memory monitoring records: the `MonitoringRecords` port without a server, for tests and dry runs.

Keeps the port's whole contract (the same contract suite runs over it and over MLflow). Artifacts are copied
into memory when logged. Safe to call from several threads, though the job calls it from one at a time.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelloop.contract.errors import NotFoundError
from modelloop.contract.registry import TAG_MONITOR_MODEL, TAG_MONITOR_WINDOW
from modelloop.monitoring.records import (
    FAILED,
    FINISHED,
    METRIC_WINDOW_END,
    RUNNING,
    MonitoringRecords,
    WindowRun,
    run_tags,
    window_record,
)
from modelloop.monitoring.trigger import WindowRecord


@dataclass
class _Run:
    status: str
    tags: dict[str, str]
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    artifacts: dict[str, bytes] = field(default_factory=dict)
    deleted: bool = False
    name: str = ""
    description: str = ""

    def view(self, run_id: str) -> WindowRun:
        return WindowRun(run_id, self.status, dict(self.tags), dict(self.params), dict(self.metrics))


class InMemoryMonitoringRecords(MonitoringRecords):
    """Window runs in a dictionary; `run`, `artifact` and `named` read a run, an artifact, and a run's name
    and description back (not the port)."""

    def __init__(self, tracking_uri: str = "memory://monitoring") -> None:
        self._tracking_uri = tracking_uri
        self._lock = threading.Lock()
        self._runs: dict[str, _Run] = {}
        self._ids = itertools.count(1)

    @property
    def tracking_uri(self) -> str:
        return self._tracking_uri

    def run(self, run_id: str) -> WindowRun:
        """One run, deleted or not; NotFoundError when there never was such a run."""
        with self._lock:
            run = self._runs.get(run_id)
            if run is None:
                raise NotFoundError(f"run {run_id} does not exist")
            return run.view(run_id)

    def named(self, run_id: str) -> tuple[str, str]:
        """A run's name and description."""
        with self._lock:
            run = self._run(run_id)
            return run.name, run.description

    def artifact(self, run_id: str, path: str) -> bytes:
        """The bytes of one artifact of a run; NotFoundError when it has no such artifact."""
        with self._lock:
            data = self._run(run_id).artifacts.get(path)
        if data is None:
            raise NotFoundError(f"run {run_id} has no artifact {path}")
        return data

    # --- reads -------------------------------------------------------------------------------------------
    def window_runs(self, model: str, window_id: str) -> list[WindowRun]:
        with self._lock:
            return [
                run.view(run_id)
                for run_id, run in self._active(model)
                if run.tags.get(TAG_MONITOR_WINDOW) == window_id
            ]

    def history(self, model: str, *, limit: int = 200) -> list[WindowRecord]:
        with self._lock:
            runs = [run for _, run in self._active(model)]
        # newest window end first; runs without one last (as MLflow orders missing metrics)
        runs.sort(key=lambda r: (METRIC_WINDOW_END not in r.metrics, -r.metrics.get(METRIC_WINDOW_END, 0.0)))
        return [window_record(r.tags, r.params, r.metrics) for r in runs[:limit]]

    def artifact_paths(self, run_id: str) -> list[str]:
        with self._lock:
            return sorted(self._run(run_id).artifacts)

    # --- writes ------------------------------------------------------------------------------------------
    def start_run(
        self, model: str, window_id: str, tags: Mapping[str, str], *, name: str | None = None
    ) -> str:
        all_tags = run_tags(model, window_id, tags)
        with self._lock:
            run_id = f"run-{next(self._ids)}"
            self._runs[run_id] = _Run(RUNNING, all_tags, name=name or f"{model} {window_id}")
        return run_id

    def describe(self, run_id: str, description: str) -> None:
        with self._lock:
            self._run(run_id).description = description

    def log_table(self, run_id: str, path: str, rows: Sequence[Mapping[str, Any]]) -> None:
        columns = list(rows[0]) if rows else []
        data = {"columns": columns, "data": [[row.get(c) for c in columns] for row in rows]}
        with self._lock:
            self._run(run_id).artifacts[path] = json.dumps(data).encode()

    def log(
        self,
        run_id: str,
        *,
        metrics: Mapping[str, float] | None = None,
        params: Mapping[str, str] | None = None,
        tags: Mapping[str, str] | None = None,
        timestamp_ms: int = 0,
    ) -> None:
        with self._lock:
            run = self._run(run_id)
            run.metrics.update({k: float(v) for k, v in (metrics or {}).items()})
            run.params.update({k: str(v) for k, v in (params or {}).items()})
            run.tags.update({k: str(v) for k, v in (tags or {}).items()})

    def log_artifacts(self, run_id: str, folder: Path) -> None:
        files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
        with self._lock:
            self._run(run_id).artifacts.update(files)

    def finish(self, run_id: str, *, failed: bool = False) -> None:
        with self._lock:
            self._run(run_id).status = FAILED if failed else FINISHED

    def delete_runs(self, run_ids: Sequence[str]) -> None:
        with self._lock:
            for run_id in run_ids:
                if run_id in self._runs:
                    self._runs[run_id].deleted = True

    # --- lookups (the lock is held) ----------------------------------------------------------------------
    def _run(self, run_id: str) -> _Run:
        run = self._runs.get(run_id)
        if run is None or run.deleted:
            raise NotFoundError(f"run {run_id} does not exist")
        return run

    def _active(self, model: str) -> list[tuple[str, _Run]]:
        return [
            (run_id, run)
            for run_id, run in self._runs.items()
            if not run.deleted and run.tags.get(TAG_MONITOR_MODEL) == model
        ]


__all__ = ["InMemoryMonitoringRecords"]
