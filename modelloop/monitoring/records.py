"""The monitoring-records port: where the monitoring job keeps one run per (model, window), and reads them.

Implemented by `modelloop.monitoring.mlflow_records.MlflowMonitoringRecords` (runs in the monitoring
experiment of an MLflow tracking server) and `modelloop.monitoring.memory_records.InMemoryMonitoringRecords`
(tests, dry runs); one contract test suite (`tests/contract/monitoring_records_contract.py`) runs over both.
Called by `monitoring.job` only. What the registry holds (versions, training runs, reference profiles, the
tags of the last firing) is read and written through `modelloop.contract.model_registry.ModelRegistry`.

The contract:
- A window's run is created by `start_run` (status RUNNING, tagged with the run kind, the model and the
  window, named `name` when given), filled by `log`, `log_table` (a table artifact: per-feature statistics),
  `log_artifacts` and `describe` (the run's markdown description), and ended by `finish` (FINISHED, or
  FAILED).
- `window_runs` returns the runs of one (model, window) that are not deleted, in any status; `delete_runs`
  removes runs from `window_runs` and `history` and ignores ids already deleted or unknown (idempotent).
- `history` returns the model's runs that are not deleted, newest window end first (runs without a window
  end last), as the trigger's `WindowRecord`s (`window_record` reads them back the same way everywhere).
- `log` merges: a metric or tag logged again keeps its latest value; a param is logged once (MLflow
  refuses to change one). Writing to a run that does not exist raises `NotFoundError`.
- Every method raises exactly one of `NotFoundError`, `UnavailableError` (the store cannot be reached now;
  retrying may succeed) and `RegistryRefusedError` (the store answered and refused) on failure, never a
  transport exception; messages name the run or model, never a credential.
- `tracking_uri` is where a retraining must record its own runs: the monitoring run that triggered it
  (`--triggered-by`) lives there.
Implementations are called from one thread at a time (one monitoring pass after another).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelloop.contract.registry import (
    TAG_MONITOR_MODEL,
    TAG_MONITOR_STATUS,
    TAG_MONITOR_WINDOW,
    TAG_QUALITY_BREACHED,
    TAG_RUN_KIND,
)
from modelloop.monitoring.trigger import WindowRecord

#: Metric names of a window's run (DESIGN.md) that the job reads back through `history`.
METRIC_WINDOW_END = "window.end"
METRIC_WINDOW_ROWS = "window.rows"
METRIC_SHARE_DRIFTED = "drift.share_drifted"
#: Windows of the same length before this one, since the model's previous recorded window, that had no
#: traffic (empty windows are not recorded: they are counted here, on the next window's run).
METRIC_EMPTY_BEFORE = "window.empty_before"
#: Param of a window's run: the version that served the window ("" when nothing was served).
PARAM_MODEL_VERSION = "model_version"

#: Run statuses a window's run goes through.
RUNNING, FINISHED, FAILED = "RUNNING", "FINISHED", "FAILED"


@dataclass(frozen=True)
class WindowRun:
    """One recorded run of a (model, window), as `window_runs` returns it."""

    run_id: str
    status: str  # RUNNING | FINISHED | FAILED (| KILLED, set outside modelloop)
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)  # latest value of each metric


def run_tags(model: str, window_id: str, tags: Mapping[str, str]) -> dict[str, str]:
    """The tags a window's run starts with: the run kind, the model, the window, and `tags`."""
    return {TAG_RUN_KIND: "monitoring", TAG_MONITOR_MODEL: model, TAG_MONITOR_WINDOW: window_id, **tags}


def window_record(
    tags: Mapping[str, str], params: Mapping[str, str], metrics: Mapping[str, float]
) -> WindowRecord:
    """The trigger's view of a window's run, from what the job logged on it."""
    return WindowRecord(
        window_id=tags.get(TAG_MONITOR_WINDOW, ""),
        end=float(metrics.get(METRIC_WINDOW_END, 0.0)),
        version=params.get(PARAM_MODEL_VERSION) or None,
        status=tags.get(TAG_MONITOR_STATUS, "ok"),
        rows=int(metrics.get(METRIC_WINDOW_ROWS, 0)),
        share_drifted=metrics.get(METRIC_SHARE_DRIFTED),
        quality_breached=tags.get(TAG_QUALITY_BREACHED) == "1",
    )


class MonitoringRecords(ABC):
    """The monitoring-records port (see the module docstring for the contract every implementation keeps)."""

    @property
    @abstractmethod
    def tracking_uri(self) -> str:
        """The tracking server a retraining records to (the one holding these runs)."""

    # --- reads -------------------------------------------------------------------------------------------
    @abstractmethod
    def window_runs(self, model: str, window_id: str) -> list[WindowRun]:
        """The runs recorded for (model, window) that are not deleted, in any status."""

    @abstractmethod
    def history(self, model: str, *, limit: int = 200) -> list[WindowRecord]:
        """The model's most recent `limit` windows (runs not deleted), newest window end first."""

    @abstractmethod
    def artifact_paths(self, run_id: str) -> list[str]:
        """The paths of every artifact file of a run, relative and sorted; NotFoundError for no such run."""

    # --- writes ------------------------------------------------------------------------------------------
    @abstractmethod
    def start_run(
        self, model: str, window_id: str, tags: Mapping[str, str], *, name: str | None = None
    ) -> str:
        """A new RUNNING run of (model, window) tagged with `run_tags(model, window_id, tags)` and named
        `name` (default: the model and the window); its id."""

    @abstractmethod
    def describe(self, run_id: str, description: str) -> None:
        """Set the run's description (markdown, shown on the run's page)."""

    @abstractmethod
    def log_table(self, run_id: str, path: str, rows: Sequence[Mapping[str, Any]]) -> None:
        """Log `rows` (one mapping per row, the same keys) as a table artifact at `path` (a `.json` file)."""

    @abstractmethod
    def log(
        self,
        run_id: str,
        *,
        metrics: Mapping[str, float] | None = None,
        params: Mapping[str, str] | None = None,
        tags: Mapping[str, str] | None = None,
        timestamp_ms: int = 0,
    ) -> None:
        """Add metrics (at `timestamp_ms`), params and tags to a run (any number of each)."""

    @abstractmethod
    def log_artifacts(self, run_id: str, folder: Path) -> None:
        """Copy every file under `folder` to the run's artifacts, keeping the relative paths."""

    @abstractmethod
    def finish(self, run_id: str, *, failed: bool = False) -> None:
        """End a run: FINISHED, or FAILED with `failed`."""

    @abstractmethod
    def delete_runs(self, run_ids: Sequence[str]) -> None:
        """Delete runs (already deleted or unknown ids are ignored)."""

    # --- derived reads, the same for every implementation ------------------------------------------------
    def window_recorded(self, model: str, window_id: str) -> bool:
        """Whether (model, window) has a finished run (a failed or unfinished one does not count: a scheduler
        measures that window again, and the new run replaces it)."""
        return any(run.status == FINISHED for run in self.window_runs(model, window_id))


__all__ = [
    "FAILED",
    "FINISHED",
    "METRIC_EMPTY_BEFORE",
    "METRIC_SHARE_DRIFTED",
    "METRIC_WINDOW_END",
    "METRIC_WINDOW_ROWS",
    "PARAM_MODEL_VERSION",
    "RUNNING",
    "MonitoringRecords",
    "WindowRun",
    "run_tags",
    "window_record",
]
