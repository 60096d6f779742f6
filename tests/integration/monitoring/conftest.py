"""Fixtures for monitoring's integration tests: the job's two ports over MLflow (`ports`), a real registered
model (the reference workload) whose training run also holds what training writes for monitoring (the
training metric, test metrics and the resolved training config), and prediction-log windows written through
the logging contract (`PredictionBatch` → `SqlPredictionLog.write`) into SQLite or a real PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pyarrow as pa
import pytest
from sklearn.datasets import load_breast_cancer

from modelloop.adapters.mlflow_registry import MlflowModelRegistry
from modelloop.contract.predlog import (
    LATENCY_COLUMN,
    PREDICTION_COLUMN,
    REQUEST_ID_COLUMN,
    TIME_COLUMN,
    PredictionBatch,
    SqlPredictionLog,
)
from modelloop.contract.registry import PARAM_METRIC, PARAM_TASK, RESOLVED_CONFIG_PATH, Route
from modelloop.monitoring.mlflow_records import MlflowMonitoringRecords
from tests.models import RegisteredModel, register_reference_model

#: Windows of these tests lie in the past, aligned to 15 minutes.
T0 = 1_700_000_100.0 - (1_700_000_100.0 % 900)
WINDOW = 900.0
TRAINING_CONFIG = "dataset: breast_cancer\ntask: classification\nmetric: accuracy\nn_trials: 2\n"
TEST_METRICS = {"accuracy": 0.965, "f1": 0.972, "roc_auc": 0.991}


@dataclass(frozen=True)
class Monitored:
    model: RegisteredModel
    labels: np.ndarray  # the true class of each reference row


def ports(tracking_uri: str) -> tuple[MlflowModelRegistry, MlflowMonitoringRecords]:
    """The job's two ports over the MLflow server at `tracking_uri`, as `modelloop monitor` wires them."""
    return MlflowModelRegistry(tracking_uri), MlflowMonitoringRecords(tracking_uri)


def run_ids(records: MlflowMonitoringRecords, model: str, window_id: str) -> list[str]:
    """Ids of the runs (not deleted) recorded for (model, window)."""
    return [run.run_id for run in records.window_runs(model, window_id)]


def register_monitored(tracking_uri: str, name: str) -> Monitored:
    """Register the reference model and add what training logs for monitoring to its training run."""
    model = register_reference_model(tracking_uri, name)
    client = mlflow.MlflowClient(tracking_uri)
    client.log_param(model.run_id, PARAM_METRIC, "accuracy")
    client.log_param(model.run_id, PARAM_TASK, "classification")
    for key, value in TEST_METRICS.items():
        client.log_metric(model.run_id, f"test.{key}", value)
    client.log_text(model.run_id, TRAINING_CONFIG, RESOLVED_CONFIG_PATH)
    return Monitored(model, np.asarray(load_breast_cancer().target))


def window_batches(
    monitored: Monitored,
    start: float,
    rows: int,
    *,
    seed: int,
    shift: float = 0.0,
    prefix: str = "r",
    version: str | None = None,
    route: Route = Route.CHAMPION,
    blocks: int = 3,
) -> list[PredictionBatch]:
    """`rows` requests spread over [start, start + WINDOW), sampled from the reference rows, every feature
    moved by `shift` of its standard deviation; predictions are the true labels (a perfect model)."""
    rng = np.random.default_rng(seed)
    x = monitored.model.features
    idx = rng.integers(0, len(x), rows)
    values = x.to_numpy()[idx] + shift * x.std().to_numpy()
    times = start + np.sort(rng.uniform(0, WINDOW - 1, rows))
    table = pa.table(
        {
            TIME_COLUMN: pa.array(times, pa.float64()),
            REQUEST_ID_COLUMN: pa.array([f"{prefix}-{seed}-{i}" for i in range(rows)]),
            LATENCY_COLUMN: pa.array(rng.uniform(1, 3, rows)),
            PREDICTION_COLUMN: pa.array(monitored.labels[idx].astype(np.int64)),
            **{c: pa.array(values[:, j]) for j, c in enumerate(x.columns)},
        }
    )
    step = -(-rows // blocks)
    return [
        PredictionBatch(monitored.model.name, version or monitored.model.version, route, table.slice(i, step))
        for i in range(0, rows, step)
    ]


def write(store: SqlPredictionLog, batches: list[PredictionBatch]) -> None:
    for batch in batches:
        store.write(batch)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlPredictionLog]:
    """A fresh prediction log in SQLite or in a fresh real PostgreSQL database."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'predictions.db'}"
    else:
        url = request.getfixturevalue("fresh_postgres_url")
    log = SqlPredictionLog(url)
    try:
        yield log
    finally:
        log.close()


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[SqlPredictionLog]:
    """A fresh SQLite prediction log, for tests whose subject is not the database (its code path is the same
    for PostgreSQL, and the tests above run on both)."""
    log = SqlPredictionLog(f"sqlite:///{tmp_path / 'predictions.db'}")
    try:
        yield log
    finally:
        log.close()


@pytest.fixture(scope="session")
def monitored(mlflow_server: str) -> Monitored:
    """One registered model shared by the measuring tests (they use distinct windows)."""
    return register_monitored(mlflow_server, "monitoring-drift")
