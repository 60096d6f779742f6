"""The monitoring-records contract over MLflow: a real `mlflow server` on loopback (the session's server)."""

from __future__ import annotations

import pytest

from modelloop.contract.errors import UnavailableError
from modelloop.monitoring.mlflow_records import MlflowMonitoringRecords
from modelloop.monitoring.records import MonitoringRecords
from tests.contract.monitoring_records_contract import MonitoringRecordsContract


class TestMlflowMonitoringRecords(MonitoringRecordsContract):
    @pytest.fixture
    def records(self, mlflow_server: str) -> MonitoringRecords:
        return MlflowMonitoringRecords(mlflow_server)


def test_runs_live_in_the_monitoring_experiment(mlflow_server: str) -> None:
    import mlflow

    records = MlflowMonitoringRecords(mlflow_server)
    run_id = records.start_run("contract-experiment", "w1", {})
    experiment = mlflow.MlflowClient(mlflow_server).get_run(run_id).info.experiment_id
    assert experiment == records.experiment_id() == MlflowMonitoringRecords(mlflow_server).experiment_id()


def test_an_unreachable_server_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    records = MlflowMonitoringRecords("http://127.0.0.1:9")
    with pytest.raises(UnavailableError, match=r"127\.0\.0\.1:9"):
        records.window_runs("m", "w1")
