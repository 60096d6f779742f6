"""Serving and monitoring a version that `modelloop train` registered, for training's integration tests.

`logging_server` runs a real scoring server with the prediction log on (SQLite in the test's folder);
`send_windows` sends it real gRPC traffic in two windows, rows drawn from the data first as they are, then
every numeric feature moved by one standard deviation; `monitor` runs `modelloop monitor --start/--end` on a
window and returns the monitoring run it wrote to MLflow; `assert_monitored` checks both windows' runs
(the version served, drift measured against its reference profile, only the shifted window drifted).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
from click.testing import CliRunner
from mlflow import MlflowClient
from mlflow.entities import Run

from modelloop.cli import cli
from modelloop.client import ScoringClient
from modelloop.contract.predlog import SqlPredictionLog
from modelloop.contract.registry import TAG_MONITOR_STATUS
from modelloop.monitoring.records import METRIC_SHARE_DRIFTED, METRIC_WINDOW_ROWS, PARAM_MODEL_VERSION
from modelloop.monitoring.run_content import FEATURES_TABLE_PATH
from modelloop.monitoring.window import Window
from modelloop.serving.settings import ServeSettings
from tests.integration.serving.conftest import RunningServer

#: Rows sent in each window: below the drift rules' large-window size, so the tests (KS) decide.
WINDOW_ROWS = 300
BATCH = 100


def log_url(data_dir: Path) -> str:
    return f"sqlite:///{data_dir / 'predictions.db'}"


@contextmanager
def logging_server(tracking_uri: str, model: str, data_dir: Path) -> Iterator[ScoringClient]:
    """A real scoring server for `model` ("NAME/VERSION") logging every prediction; a client to it. The
    server is stopped (its prediction log drained) on exit."""
    server = RunningServer(
        ServeSettings(
            models=[model],
            tracking_uri=tracking_uri,
            port=0,
            metrics_port=0,
            data_dir=data_dir,
            prediction_log_url=log_url(data_dir),
            grace_period=5.0,
            predlog_flush_interval=0.1,
        )
    )
    try:
        with ScoringClient(server.address) as client:
            yield client
    finally:
        server.stop()


def send_windows(
    client: ScoringClient, name: str, features: pd.DataFrame, start: float
) -> tuple[Window, Window]:
    """Send `WINDOW_ROWS` rows of `features` as they are, then `WINDOW_ROWS` shifted by one standard
    deviation, in batches; the clean window (from `start`) and the shifted one."""
    clean = features.sample(WINDOW_ROWS, replace=True, random_state=0)
    shifted = features.sample(WINDOW_ROWS, replace=True, random_state=1) + features.std()
    _send(client, name, clean)
    time.sleep(0.05)
    middle = time.time()
    _send(client, name, shifted)
    return Window(start, middle), Window(middle, time.time() + 0.001)


def _send(client: ScoringClient, name: str, rows: pd.DataFrame) -> None:
    for i in range(0, len(rows), BATCH):
        answer = client.predict(name, rows.iloc[i : i + BATCH])
        assert len(answer.predictions) == len(rows.iloc[i : i + BATCH])


def wait_logged(data_dir: Path, name: str, window: Window, rows: int) -> None:
    """Wait until the prediction log holds `rows` rows of `name` in `window`."""
    store = SqlPredictionLog(log_url(data_dir))
    try:
        deadline = time.monotonic() + 60
        while store.count(name, window.start, window.end) < rows:
            assert time.monotonic() < deadline, f"prediction log has not reached {rows} rows"
            time.sleep(0.1)
    finally:
        store.close()


def monitor(tracking_uri: str, data_dir: Path, name: str, window: Window) -> Run:
    """`modelloop monitor --start --end` over `window` (no retraining); the MLflow run it wrote."""
    args = ["monitor", "--model", name, "--start", repr(window.start), "--end", repr(window.end)]
    args += ["--tracking-uri", tracking_uri, "--prediction-log-url", log_url(data_dir), "--no-retrain"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    (line,) = result.stdout.splitlines()
    fields = dict(part.split("=", 1) for part in line.split()[2:])
    assert fields["status"] == "ok", line
    return MlflowClient(tracking_uri).get_run(fields["run"])


def assert_monitored(
    tracking_uri: str,
    data_dir: Path,
    name: str,
    version: str,
    features: pd.DataFrame,
    windows: tuple[Window, Window],
) -> None:
    """Both windows are monitored runs in MLflow for `version`, with drift measured on every feature against
    the version's reference profile; the clean window is not drifted, the shifted one is."""
    clean, shifted = windows
    wait_logged(data_dir, name, shifted, WINDOW_ROWS)
    wait_logged(data_dir, name, clean, WINDOW_ROWS)
    runs = [monitor(tracking_uri, data_dir, name, window) for window in windows]
    client = MlflowClient(tracking_uri)
    for run in runs:
        assert run.info.status == "FINISHED"
        assert run.data.params[PARAM_MODEL_VERSION] == version
        assert run.data.tags[TAG_MONITOR_STATUS] == "ok"
        assert run.data.metrics["drift.n_evaluated"] == features.shape[1]
        assert 0.0 <= run.data.metrics[METRIC_SHARE_DRIFTED] <= 1.0
        assert FEATURES_TABLE_PATH in {a.path for a in client.list_artifacts(run.info.run_id)}
    clean_run, shifted_run = runs
    assert clean_run.data.metrics[METRIC_WINDOW_ROWS] >= WINDOW_ROWS
    assert clean_run.data.metrics["drift.dataset_drifted"] == 0.0
    assert shifted_run.data.metrics[METRIC_WINDOW_ROWS] == WINDOW_ROWS
    assert shifted_run.data.metrics["drift.dataset_drifted"] == 1.0
    assert shifted_run.data.metrics[METRIC_SHARE_DRIFTED] == 1.0
