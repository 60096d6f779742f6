"""Fixtures for batch scoring against a real MLflow server: the reference model, its rows as files and tables,
and `run_score`, which runs `modelloop score` through the real command line (click, `reports_errors`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner, Result

from modelloop.adapters.mlflow_batch_runs import BATCH_EXPERIMENT, TAG_BATCH_ID
from modelloop.cli import cli
from tests.models import RegisteredModel, register_reference_model

MODEL = "batch-ref"


@dataclass(frozen=True)
class Reference:
    model: RegisteredModel
    tracking_uri: str
    proba: np.ndarray  # the model's own predict_proba on `model.features`

    @property
    def ref(self) -> str:
        return f"{self.model.name}/{self.model.version}"


@pytest.fixture(scope="session")
def reference(mlflow_server: str) -> Reference:
    registered = register_reference_model(mlflow_server, MODEL, max_iter=10)
    mlflow.set_tracking_uri(mlflow_server)
    pipe = mlflow.sklearn.load_model(f"models:/{MODEL}/{registered.version}")
    proba = np.asarray(pipe.predict_proba(registered.features))
    return Reference(registered, mlflow_server, proba)


def batch_runs(tracking_uri: str, batch_id: str) -> list[mlflow.entities.Run]:
    """The runs of batch `batch_id` in the batch experiment (its parent and shards, or its one run)."""
    client = mlflow.MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(BATCH_EXPERIMENT)
    assert exp is not None
    return list(client.search_runs([exp.experiment_id], f"tags.`{TAG_BATCH_ID}` = '{batch_id}'"))


def frame_with_id(reference: Reference) -> pd.DataFrame:
    frame = reference.model.features.copy()
    frame.insert(0, "customer_id", np.arange(1000, 1000 + len(frame), dtype=np.int64))
    return frame


@pytest.fixture
def parquet_input(reference: Reference, tmp_path: Path) -> Path:
    """The reference rows with a `customer_id` key, in several row groups."""
    path = tmp_path / "input.parquet"
    pq.write_table(
        pa.Table.from_pandas(frame_with_id(reference), preserve_index=False), path, row_group_size=100
    )
    return path


@pytest.fixture
def run_score(reference: Reference) -> Callable[..., Result]:
    def run(*args: str) -> Result:
        return CliRunner().invoke(cli, ["score", "--tracking-uri", reference.tracking_uri, "--quiet", *args])

    return run
