"""The monitoring-records contract over the in-memory implementation."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelloop.monitoring.memory_records import InMemoryMonitoringRecords
from modelloop.monitoring.records import MonitoringRecords
from tests.contract.monitoring_records_contract import MonitoringRecordsContract


class TestInMemoryMonitoringRecords(MonitoringRecordsContract):
    @pytest.fixture
    def records(self) -> MonitoringRecords:
        return InMemoryMonitoringRecords()


def test_artifacts_are_copied_when_logged(tmp_path: Path) -> None:
    records = InMemoryMonitoringRecords()
    run_id = records.start_run("m", "w", {})
    (tmp_path / "report.html").write_text("first")
    records.log_artifacts(run_id, tmp_path)
    (tmp_path / "report.html").write_text("changed afterwards")
    assert records.artifact(run_id, "report.html") == b"first"
