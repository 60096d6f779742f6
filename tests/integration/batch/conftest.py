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
