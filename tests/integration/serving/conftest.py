"""Fixtures of the scoring-tier integration tests: models registered in the session's real MLflow server
(the reference classifier in two versions plus a broken third, a regressor, a model with string, integer,
boolean and float columns) and real scoring servers on loopback, run in a background thread of the test
process (`RunningServer`) so each test can start one with its own settings in about a second."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.models import infer_signature
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from modelloop.contract.profile import build_profile
from modelloop.contract.registry import MODEL_ARTIFACT_PATH, REFERENCE_PROFILE_PATH
from modelloop.serving.app import run
from modelloop.serving.settings import ServeSettings
from tests.models import RegisteredModel, register_reference_model

REF = "serving-ref"
REG = "serving-reg"
MIXED = "serving-mixed"
ADMIN_TOKEN = "admin-s3cret"  # the admin service's own credential (test servers run it unless told not to)
COLORS = ["red", "green", "blue"]


@dataclass(frozen=True)
class Models:
    tracking_uri: str
    v1: RegisteredModel
    v2: RegisteredModel
    broken_version: str
    regression: RegisteredModel
    mixed_version: str

    def rows(self, n: int = 3) -> pd.DataFrame:
        return self.v1.features.head(n).reset_index(drop=True)


def mixed_frame(n: int = 60, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "color": rng.choice(COLORS, n).astype(object),
            "count": rng.integers(0, 10, n).astype(np.int64),
            "size": rng.normal(0, 1, n),
            "flag": rng.integers(0, 2, n).astype(bool),
        }
    )


def register_mixed_model(tracking_uri: str, name: str) -> str:
    """A classifier over a string, an integer, a float and a boolean column, logged like training does."""
    x = mixed_frame()
    y = ((x["size"] > 0) ^ (x["color"] == "red")).astype(int)
    pipe = Pipeline(
        [
            ("prep", ColumnTransformer([("onehot", OneHotEncoder(handle_unknown="ignore"), ["color"])],
                                       remainder="passthrough")),
            ("model", LogisticRegression()),
        ]
    )  # fmt: skip
    pipe.fit(x, y)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(f"tests-{name}")
    with mlflow.start_run():
        pred = pipe.predict(x)
        info = mlflow.sklearn.log_model(
            pipe, name=MODEL_ARTIFACT_PATH, signature=infer_signature(x, pred), input_example=x.head(2),
            serialization_format="skops", skops_trusted_types=[],
        )  # fmt: skip
        mlflow.log_text(
            build_profile(x, pred, task="classification").model_dump_json(), REFERENCE_PROFILE_PATH
        )
    return str(mlflow.register_model(info.model_uri, name).version)


@pytest.fixture(scope="session")
def models(mlflow_server: str) -> Models:
    v1 = register_reference_model(mlflow_server, REF, max_iter=10)
    v2 = register_reference_model(mlflow_server, REF, max_iter=15, seed=1)
    broken = register_reference_model(mlflow_server, REF, broken=True)
    regression = register_reference_model(mlflow_server, REG, task="regression", max_iter=10)
    mixed = register_mixed_model(mlflow_server, MIXED)
    mlflow.MlflowClient(mlflow_server).set_registered_model_alias(REF, "production", v1.version)
    return Models(mlflow_server, v1, v2, broken.version, regression, mixed)


class RunningServer:
    """`serving.app.run` in a background thread with its own event loop: a real gRPC server on loopback."""

    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        self.port = 0
        self.metrics_port: int | None = None
        self.error: BaseException | None = None
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, name="scoring-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(120):
            raise AssertionError("scoring server did not start within 120 s")
        if self.error is not None:
            raise self.error

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)

        def started(port: int, metrics_port: int | None) -> None:
            self.port, self.metrics_port = port, metrics_port
            self._ready.set()

        async def main() -> None:
            self._stop = asyncio.Event()
            await run(self.settings, stop=self._stop, started=started)

        try:
            self._loop.run_until_complete(main())
        except BaseException as exc:
            self.error = exc
        finally:
            self._ready.set()
            self._loop.close()

    def call(self, coro: Any) -> Any:
        """Run a coroutine on the server's loop (e.g. to read its state) and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(60)

    def stop(self) -> None:
        if self._thread.is_alive() and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(60)
        if self.error is not None:
            raise self.error


def settings_for(registered: Models, tmp_path: Path, **overrides: Any) -> ServeSettings:
    admin = tmp_path / "admin-token"
    admin.write_text(ADMIN_TOKEN)
    values: dict[str, Any] = {
        "admin_token_file": admin,
        "models": [f"{REF}/{registered.v1.version}"],
        "tracking_uri": registered.tracking_uri,
        "port": 0,
        "metrics_port": 0,
        "data_dir": tmp_path,
        "prediction_log_url": "none",
        "grace_period": 5.0,
        "predlog_flush_interval": 0.1,
    }
    values.update(overrides)
    return ServeSettings(**values)


@pytest.fixture
def start_server(models: Models, tmp_path: Path) -> Iterator[Any]:
    """Start scoring servers with `settings_for` overrides; all are stopped after the test."""
    servers: list[RunningServer] = []

    def start(**overrides: Any) -> RunningServer:
        server = RunningServer(settings_for(models, tmp_path, **overrides))
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
