"""The contract of `modelloop.monitoring.records.MonitoringRecords`, one suite for every implementation.

`tests/contract/test_memory_monitoring_records.py` and `test_mlflow_monitoring_records.py` subclass
`MonitoringRecordsContract` and provide the `records` fixture (the MLflow one against a real `mlflow server`
on loopback). Each test works on a model name of its own, so a shared server needs no cleaning.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from modelloop.contract.errors import NotFoundError
from modelloop.contract.registry import (
    TAG_MONITOR_MODEL,
    TAG_MONITOR_STATUS,
    TAG_MONITOR_WINDOW,
    TAG_QUALITY_BREACHED,
    TAG_RUN_KIND,
)
from modelloop.monitoring.records import (
    FAILED,
    FINISHED,
    METRIC_SHARE_DRIFTED,
    METRIC_WINDOW_END,
    METRIC_WINDOW_ROWS,
    PARAM_MODEL_VERSION,
    RUNNING,
    MonitoringRecords,
)
from modelloop.monitoring.trigger import WindowRecord

#: a run id no implementation hands out (MLflow's are 32 hex digits)
UNKNOWN_RUN = "0123456789abcdef0123456789abcdef"


class MonitoringRecordsContract:
    """Every test of the port; a subclass provides `records`."""

    @pytest.fixture
    def model(self) -> str:
        return f"contract-{uuid.uuid4().hex[:10]}"

    def _window(self, records: MonitoringRecords, model: str, window_id: str, end: float, **tags: str) -> str:
        """A finished window run with what the job logs for the trigger."""
        run_id = records.start_run(model, window_id, {TAG_MONITOR_STATUS: "ok", **tags})
        records.log(
            run_id,
            metrics={METRIC_WINDOW_END: end, METRIC_WINDOW_ROWS: 1200.0, METRIC_SHARE_DRIFTED: 0.25},
            params={PARAM_MODEL_VERSION: "3"},
        )
        records.finish(run_id)
        return run_id

    def test_a_started_run_is_found_by_model_and_window_with_its_tags(
        self, records: MonitoringRecords, model: str
    ) -> None:
        run_id = records.start_run(model, "w1", {TAG_MONITOR_STATUS: "empty"})
        records.start_run(model, "w2", {})
        records.start_run(f"{model}-other", "w1", {})
        (run,) = records.window_runs(model, "w1")
        assert run.run_id == run_id and run.status == RUNNING
        assert run.tags[TAG_RUN_KIND] == "monitoring"
        assert run.tags[TAG_MONITOR_MODEL] == model and run.tags[TAG_MONITOR_WINDOW] == "w1"
        assert run.tags[TAG_MONITOR_STATUS] == "empty"
        assert records.window_runs(model, "w3") == []

    def test_logged_metrics_params_and_tags_read_back(self, records: MonitoringRecords, model: str) -> None:
        run_id = records.start_run(model, "w1", {})
        many = {f"drift.psi.f{i}": i / 10 for i in range(1500)}  # more than one batch
        records.log(run_id, metrics=many, params={"model_name": model, "rows": "12"}, timestamp_ms=5000)
        records.log(run_id, tags={"modelloop.retrain.decision": "cooldown"})
        records.log(run_id, tags={"modelloop.retrain.decision": "fired"})  # a tag again: the latest value
        (run,) = records.window_runs(model, "w1")
        assert run.metrics == pytest.approx(many)
        assert run.params == {"model_name": model, "rows": "12"}
        assert run.tags["modelloop.retrain.decision"] == "fired"

    def test_finish_ends_a_run_and_only_a_finished_run_counts_as_recorded(
        self, records: MonitoringRecords, model: str
    ) -> None:
        failed = records.start_run(model, "w1", {})
        assert not records.window_recorded(model, "w1")
        records.finish(failed, failed=True)
        assert [r.status for r in records.window_runs(model, "w1")] == [FAILED]
        assert not records.window_recorded(model, "w1")
        finished = records.start_run(model, "w1", {})
        records.finish(finished)
        assert {r.run_id: r.status for r in records.window_runs(model, "w1")} == {
            failed: FAILED,
            finished: FINISHED,
        }
        assert records.window_recorded(model, "w1")

    def test_deleted_runs_are_gone_and_deleting_again_is_harmless(
        self, records: MonitoringRecords, model: str
    ) -> None:
        old = self._window(records, model, "w1", 900.0)
        new = self._window(records, model, "w1", 900.0)
        records.delete_runs([old])
        assert [r.run_id for r in records.window_runs(model, "w1")] == [new]
        assert len(records.history(model)) == 1
        records.delete_runs([old, UNKNOWN_RUN])  # idempotent
        records.delete_runs([])
        assert [r.run_id for r in records.window_runs(model, "w1")] == [new]

    def test_history_is_the_trigger_view_newest_window_first(
        self, records: MonitoringRecords, model: str
    ) -> None:
        self._window(records, model, "w1", 900.0)
        self._window(records, model, "w3", 2700.0, **{TAG_QUALITY_BREACHED: "1"})
        self._window(records, model, "w2", 1800.0, **{TAG_MONITOR_STATUS: "insufficient"})
        records.start_run(model, "w0", {})  # nothing logged yet (a run in progress): last
        self._window(records, f"{model}-other", "w9", 9000.0)
        history = records.history(model)
        assert [r.window_id for r in history] == ["w3", "w2", "w1", "w0"]
        assert history[0] == WindowRecord(
            window_id="w3",
            end=2700.0,
            version="3",
            status="ok",
            rows=1200,
            share_drifted=0.25,
            quality_breached=True,
        )
        assert history[1].status == "insufficient" and not history[1].quality_breached
        assert history[3] == WindowRecord("w0", 0.0, None, "ok", 0, None, False)
        assert [r.window_id for r in records.history(model, limit=2)] == ["w3", "w2"]

    def test_artifacts_keep_their_relative_paths(
        self, records: MonitoringRecords, model: str, tmp_path: Path
    ) -> None:
        (tmp_path / "plots").mkdir()
        (tmp_path / "report.html").write_text("<html></html>")
        (tmp_path / "plots" / "history.png").write_bytes(b"\x89PNG")
        run_id = records.start_run(model, "w1", {})
        assert records.artifact_paths(run_id) == []
        records.log_artifacts(run_id, tmp_path)
        assert records.artifact_paths(run_id) == ["plots/history.png", "report.html"]

    @pytest.mark.parametrize("suffix", ["'s model", ' "quoted"', " 'both' \"kinds\"", "_50%"])
    def test_names_are_matched_exactly(self, records: MonitoringRecords, model: str, suffix: str) -> None:
        named = f"{model}{suffix}"
        alike = (
            suffix.replace("'", "_").replace('"', "_").replace("%", "x")
        )  # what a LIKE pattern also matches
        run_id = self._window(records, named, "w1", 900.0)
        self._window(records, f"{model}{alike}", "w1", 900.0)
        assert [r.run_id for r in records.window_runs(named, "w1")] == [run_id]
        assert [r.window_id for r in records.history(named)] == ["w1"]
        assert records.window_runs(model, "w1") == []

    def test_a_run_that_does_not_exist_is_not_found(self, records: MonitoringRecords) -> None:
        with pytest.raises(NotFoundError):
            records.log(UNKNOWN_RUN, tags={"a": "b"})
        with pytest.raises(NotFoundError):
            records.finish(UNKNOWN_RUN)
        with pytest.raises(NotFoundError):
            records.artifact_paths(UNKNOWN_RUN)

    def test_the_tracking_uri_is_named(self, records: MonitoringRecords) -> None:
        assert isinstance(records.tracking_uri, str) and records.tracking_uri
