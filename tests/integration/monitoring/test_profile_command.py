"""`modelloop profile` on versions logged without modelloop: a plain `mlflow.sklearn.log_model` and a pyfunc
(`mlflow.pyfunc.log_model` with a `PythonModel`), registered and promoted as a person does it in MLflow.

Before it is profiled, monitoring records why it cannot measure the version's drift; after, the real scoring
server serves it (by its alias) and a monitoring window measures drift against the attached profile, on a real
MLflow server. Bad input writes nothing.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
import mlflow.sklearn
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from mlflow.models import infer_signature
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from modelloop.adapters.mlflow_registry import MlflowModelRegistry
from modelloop.cli import cli
from modelloop.client import ScoringClient
from modelloop.contract.errors import NotFoundError
from modelloop.contract.predlog import SqlPredictionLog
from modelloop.contract.profile import ReferenceProfile
from modelloop.contract.registry import (
    PARAM_METRIC,
    PARAM_TASK,
    PRODUCTION_ALIAS,
    REFERENCE_PROFILE_SUMMARY_PATH,
    TAG_GATE,
    TAG_GATE_REASONS,
    TAG_MONITOR_NO_DRIFT_REASON,
    TAG_MONITOR_STATUS,
    TAG_PROFILE_SOURCE,
)
from modelloop.monitoring.config import ModelMonitorConfig, RetrainPolicy
from modelloop.monitoring.job import run_window
from modelloop.monitoring.window import Window
from modelloop.serving.settings import ServeSettings
from tests.integration.monitoring.conftest import ports
from tests.integration.serving.conftest import RunningServer

CONFIG = ModelMonitorConfig(retrain=RetrainPolicy(enabled=False))


class ThresholdModel(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
    """A team's own pyfunc: a fitted pipeline's probability, cut at its own threshold."""

    def __init__(self, pipe: Pipeline, threshold: float) -> None:
        self.pipe, self.threshold = pipe, threshold

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> np.ndarray:
        return (self.pipe.predict_proba(model_input)[:, 1] >= self.threshold).astype(np.int64)


def _data() -> tuple[pd.DataFrame, pd.Series]:
    data = load_breast_cancer(as_frame=True)
    x: pd.DataFrame = data.data
    x.columns = [c.replace(" ", "_") for c in x.columns]
    return x, data.target


def _log_outside_modelloop(tracking_uri: str, name: str, flavour: str) -> str:
    """Log, register and promote a model the way a team's own script does; returns the version."""
    x, y = _data()
    pipe = Pipeline([("scale", StandardScaler()), ("model", LogisticRegression(max_iter=500))]).fit(x, y)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(f"team-{name}")
    with mlflow.start_run():
        if flavour == "sklearn":
            info = mlflow.sklearn.log_model(
                pipe,
                name="model",
                signature=infer_signature(x, pipe.predict(x)),
                serialization_format="skops",
                skops_trusted_types=[],
            )
        else:
            model = ThresholdModel(pipe, 0.4)
            info = mlflow.pyfunc.log_model(
                name="model", python_model=model, signature=infer_signature(x, model.predict(None, x))
            )
    version = str(mlflow.register_model(info.model_uri, name).version)
    mlflow.MlflowClient(tracking_uri).set_registered_model_alias(name, PRODUCTION_ALIAS, version)
    return version


def _serve_and_log(tracking_uri: str, name: str, log_url: str, tmp_path: Path, rows: pd.DataFrame) -> Window:
    """Serve `name@production` on a real gRPC server, send `rows` in batches; the window they fall in."""
    settings = ServeSettings(
        models=[f"{name}@{PRODUCTION_ALIAS}"],
        tracking_uri=tracking_uri,
        port=0,
        metrics_port=0,
        data_dir=tmp_path,
        prediction_log_url=log_url,
        grace_period=5.0,
        predlog_flush_interval=0.1,
    )
    server = RunningServer(settings)
    try:
        with ScoringClient(server.address) as client:
            start = time.time()
            for i in range(0, len(rows), 100):
                answer = client.predict(name, rows.iloc[i : i + 100])
                assert len(answer.predictions) == len(rows.iloc[i : i + 100])
            end = time.time() + 0.001
    finally:
        server.stop()
    return Window(start, end)


def _wait_rows(store: SqlPredictionLog, name: str, window: Window, rows: int) -> None:
    deadline = time.monotonic() + 60
    while store.count(name, window.start, window.end) < rows:
        assert time.monotonic() < deadline, f"prediction log has not reached {rows} rows"
        time.sleep(0.1)


@pytest.mark.parametrize("flavour", ["sklearn", "pyfunc"])
def test_a_version_logged_outside_modelloop_is_profiled_served_and_monitored(
    flavour: str, mlflow_server: str, tmp_path: Path
) -> None:
    name = f"team-model-{flavour}"
    version = _log_outside_modelloop(mlflow_server, name, flavour)
    x, y = _data()
    table = tmp_path / "holdout.csv"
    x.assign(label=y).to_csv(table, index=False)
    log_url = f"sqlite:///{tmp_path / 'predictions.db'}"
    registry, records = ports(mlflow_server)

    # before: served traffic cannot be compared; monitoring records why, instead of skipping
    before = _serve_and_log(mlflow_server, name, log_url, tmp_path, x.sample(300, random_state=1))
    store = SqlPredictionLog(log_url)
    try:
        _wait_rows(store, name, before, 300)
        unprofiled = run_window(name, before, store=store, registry=registry, records=records, config=CONFIG)
    finally:
        store.close()
    assert unprofiled.status == "no_reference" and unprofiled.version == version
    tags = mlflow.MlflowClient(mlflow_server).get_run(unprofiled.run_id).data.tags
    assert tags[TAG_MONITOR_STATUS] == "no_reference"
    assert "no reference profile" in tags[TAG_MONITOR_NO_DRIFT_REASON]
    assert f"modelloop profile --model {name}/{version}" in tags[TAG_MONITOR_NO_DRIFT_REASON]

    result = CliRunner().invoke(
        cli,
        [
            "profile",
            "--model",
            f"{name}@{PRODUCTION_ALIAS}",
            "--data",
            str(table),
            "--target",
            "label",
            "--baseline",
            "dummy",
            "--tracking-uri",
            mlflow_server,
        ],
    )
    assert result.exit_code == 0, result.output
    assert f"profiled {name}/{version} (classification)" in result.output
    profile = registry.reference_profile(name, version)
    assert isinstance(profile, ReferenceProfile) and profile.n_rows == len(x)
    assert set(profile.features) == set(x.columns)
    info = registry.version(name, version)
    assert info.tags[TAG_GATE] == "passed" and "beats baseline dummy" in info.tags[TAG_GATE_REASONS]
    assert info.tags[TAG_PROFILE_SOURCE] == f"file {table} ({len(x)} rows)"
    assert info.run_id is not None
    run = registry.run(info.run_id)
    expected_metric = "roc_auc" if flavour == "sklearn" else "accuracy"  # a pyfunc answers labels only
    assert run.params[PARAM_TASK] == "classification" and run.params[PARAM_METRIC] == expected_metric
    assert run.metrics[f"test.{expected_metric}"] > 0.9
    summary = registry.read_artifact(info.run_id, REFERENCE_PROFILE_SUMMARY_PATH).decode()
    assert summary.startswith("# Reference profile") and "| mean_radius |" in summary

    # after: the scoring server serves it by its alias; a window is measured against the attached profile
    shifted = x.sample(1200, random_state=2, replace=True) + x.std()
    after = _serve_and_log(mlflow_server, name, log_url, tmp_path, shifted)
    store = SqlPredictionLog(log_url)
    try:
        _wait_rows(store, name, after, 1200)
        measured = run_window(name, after, store=store, registry=registry, records=records, config=CONFIG)
    finally:
        store.close()
    assert measured.status == "ok" and measured.version == version and measured.rows == 1200
    assert measured.summary is not None and measured.summary.dataset_drifted


def test_bad_input_is_one_line_and_writes_nothing(mlflow_server: str, tmp_path: Path) -> None:
    name = "team-model-bad-input"
    version = _log_outside_modelloop(mlflow_server, name, "sklearn")
    x, y = _data()
    partial = tmp_path / "partial.csv"
    x.drop(columns=["mean_radius", "worst_area"]).assign(label=y).to_csv(partial, index=False)
    broken = tmp_path / "broken.parquet"
    broken.write_text("not parquet")
    common = ["--tracking-uri", mlflow_server]
    cases = {
        ("--model", f"{name}/99", "--data", str(partial)): (3, f"model {name} has no version 99"),
        ("--model", f"{name}/{version}", "--data", str(partial)): (
            2,
            "the data lacks 2 column(s) the model takes: mean_radius, worst_area",
        ),
        ("--model", f"{name}/{version}", "--data", str(broken)): (2, "cannot be read as parquet"),
        ("--model", f"{name}/{version}", "--data", str(tmp_path / "none.csv")): (2, "does not exist"),
        ("--model", f"{name}/{version}", "--data", str(partial), "--baseline", "dummy"): (
            2,
            "--baseline needs --target",
        ),
    }
    for args, (code, message) in cases.items():
        result = CliRunner().invoke(cli, ["profile", *args, *common])
        assert result.exit_code == code, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], result.output
    registry = MlflowModelRegistry(mlflow_server)
    with pytest.raises(NotFoundError):
        registry.reference_profile(name, version)
    assert TAG_GATE not in registry.version(name, version).tags
