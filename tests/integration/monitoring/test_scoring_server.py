"""Monitoring reads what the real scoring server logged: a real gRPC server on loopback writes the prediction
log into a real PostgreSQL database or into SQLite; a clean window is not flagged, a shifted one is, and
labels sent per request id give the window's quality."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from modelloop.client import ScoringClient
from modelloop.contract.predlog import SqlPredictionLog
from modelloop.monitoring.config import ModelMonitorConfig, RetrainPolicy
from modelloop.monitoring.feedback import record_feedback
from modelloop.monitoring.job import run_window
from modelloop.monitoring.window import Window
from modelloop.serving.settings import ServeSettings
from tests.integration.monitoring.conftest import ports, register_monitored
from tests.integration.serving.conftest import RunningServer

CONFIG = ModelMonitorConfig(retrain=RetrainPolicy(enabled=False))


def _wait_rows(store: SqlPredictionLog, name: str, start: float, end: float, rows: int) -> None:
    deadline = time.monotonic() + 60
    while store.count(name, start, end) < rows:
        assert time.monotonic() < deadline, f"prediction log has not reached {rows} rows"
        time.sleep(0.1)


@pytest.mark.parametrize("database", ["postgresql", "sqlite"])
def test_windows_logged_by_the_scoring_server(
    database: str, mlflow_server: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    log_url = (
        request.getfixturevalue("fresh_postgres_url")
        if database == "postgresql"
        else f"sqlite:///{tmp_path / 'predictions.db'}"
    )
    monitored = register_monitored(mlflow_server, f"monitoring-served-{database}")
    name, version = monitored.model.name, monitored.model.version
    x = monitored.model.features.reset_index(drop=True)
    rng = np.random.default_rng(0)
    settings = ServeSettings(
        models=[f"{name}/{version}"],
        tracking_uri=mlflow_server,
        port=0,
        metrics_port=0,
        data_dir=tmp_path,
        prediction_log_url=log_url,
        grace_period=5.0,
        predlog_flush_interval=0.1,
    )
    server = RunningServer(settings)
    truth: dict[str, int] = {}
    try:
        with ScoringClient(server.address) as client:
            t0 = time.time()
            for i in range(150):  # single rows with their own request id, labelled later
                row = int(rng.integers(0, len(x)))
                result = client.predict(name, x.iloc[[row]], request_id=f"one-{i}")
                truth[f"one-{i}"] = int(monitored.labels[row]) if i % 5 else 1 - int(result.predictions[0])
            for _ in range(12):
                client.predict(name, x.iloc[rng.integers(0, len(x), 100)])
            time.sleep(0.05)
            t1 = time.time()
            shifted = x + 1.0 * x.std()
            for _ in range(12):
                client.predict(name, shifted.iloc[rng.integers(0, len(x), 100)])
            t2 = time.time() + 0.001
    finally:
        server.stop()

    store = SqlPredictionLog(log_url)
    try:
        _wait_rows(store, name, t0, t2, 150 + 2400)
        assert record_feedback(store, truth, model_name=name) == 150
        registry, records = ports(mlflow_server)
        clean = run_window(
            name, Window(t0, t1), store=store, registry=registry, records=records, config=CONFIG
        )
        drifted = run_window(
            name, Window(t1, t2), store=store, registry=registry, records=records, config=CONFIG
        )
    finally:
        store.close()
    assert clean.rows == 1350 and clean.version == version
    assert clean.summary is not None and not clean.summary.dataset_drifted
    assert drifted.rows == 1200
    assert (
        drifted.summary is not None
        and drifted.summary.dataset_drifted
        and drifted.summary.share_drifted == 1.0
    )
    assert clean.quality is not None and clean.quality.labelled == 150
    assert 0.5 < clean.quality.metrics["accuracy"] < 1.0  # every fifth label contradicts the model
