"""Drift that persists launches the real `modelloop train` with the serving version's own training config,
which registers a new version linked to the monitoring run that caused it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pyarrow as pa
from sklearn.datasets import load_breast_cancer

from modelloop.contract.predlog import (
    PREDICTION_COLUMN,
    REQUEST_ID_COLUMN,
    TIME_COLUMN,
    PredictionBatch,
    SqlPredictionLog,
)
from modelloop.contract.registry import RESOLVED_CONFIG_PATH, TAG_RETRAIN_CAUSE, TAG_TRIGGERED_BY, Route
from modelloop.monitoring.config import ModelMonitorConfig, RetrainPolicy
from modelloop.monitoring.job import run_window
from modelloop.monitoring.retrain import SubprocessRetrainer
from modelloop.monitoring.trigger import Decision
from modelloop.monitoring.window import Window
from tests.integration.monitoring.conftest import ports

CONFIG = """
model_name: {name}
dataset:
  name: sklearn:breast_cancer
target: target
split:
  kind: stratified
  test_size: 0.25
estimator:
  family: hist_gradient_boosting_classifier
  search_space:
    max_iter: {{type: int, low: 10, high: 20}}
metric:
  name: roc_auc
study:
  n_trials: 2
baseline:
  name: dummy
promotion:
  policy: manual
"""


def _train(args: list[str], tracking_uri: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelloop", "train", "--quiet", "--tracking-uri", tracking_uri, *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_persistent_drift_retrains_with_the_serving_config(mlflow_server: str, tmp_path: Path) -> None:
    name = "monitoring-retrain-real"
    config_file = tmp_path / "train.yaml"
    config_file.write_text(CONFIG.format(name=name))
    first = _train(["--config", str(config_file)], mlflow_server)
    assert first.returncode == 0, first.stderr[-2000:]
    client = mlflow.MlflowClient(mlflow_server)
    (version,) = client.search_model_versions(f"name = '{name}'")

    data = load_breast_cancer(as_frame=True)
    x = data.data
    x.columns = [c.replace(" ", "_") for c in x.columns]  # as training names sklearn's columns
    rng = np.random.default_rng(0)
    rows = 1500
    idx = rng.integers(0, len(x), rows)
    shifted = x.to_numpy()[idx] + 1.0 * x.std().to_numpy()
    window = Window(1_700_000_000.0, 1_700_000_900.0)
    table = pa.table(
        {
            TIME_COLUMN: pa.array(window.start + np.sort(rng.uniform(0, 899, rows))),
            REQUEST_ID_COLUMN: pa.array([f"q{i}" for i in range(rows)]),
            PREDICTION_COLUMN: pa.array(data.target.to_numpy()[idx].astype(np.int64)),
            **{c: pa.array(shifted[:, j]) for j, c in enumerate(x.columns)},
        }
    )
    store = SqlPredictionLog(f"sqlite:///{tmp_path / 'log.db'}")
    store.write(PredictionBatch(name, str(version.version), Route.CHAMPION, table))

    retrainer = SubprocessRetrainer(tmp_path / "retraining", extra_args=("--quiet",))
    config = ModelMonitorConfig(
        retrain=RetrainPolicy(consecutive_windows=1, min_rows=1000, cooldown_seconds=0)
    )
    registry, records = ports(mlflow_server)
    outcome = run_window(
        name,
        window,
        store=store,
        registry=registry,
        records=records,
        config=config,
        retrainer=retrainer,
    )
    store.close()
    assert outcome.summary is not None and outcome.summary.dataset_drifted
    assert outcome.decision.decision is Decision.FIRED
    assert retrainer.wait(outcome.run_id, timeout=300) == 0, (tmp_path / "retraining").glob("*/train.log")

    versions = sorted(client.search_model_versions(f"name = '{name}'"), key=lambda v: int(v.version))
    assert len(versions) == 2
    new_run = client.get_run(versions[1].run_id)
    assert new_run.data.tags[TAG_TRIGGERED_BY] == outcome.run_id
    handed = Path(outcome.launch.details["config"]).read_text() if outcome.launch else ""
    assert (
        handed
        == Path(client.download_artifacts(version.run_id, RESOLVED_CONFIG_PATH, str(tmp_path))).read_text()
    )
    assert client.get_model_version(name, version.version).tags[TAG_RETRAIN_CAUSE] == outcome.decision.cause
