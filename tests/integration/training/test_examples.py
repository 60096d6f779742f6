"""Every example config in examples/ trains end to end through `modelloop train` against the real MLflow
server, with two trials (`--set study.n_trials=2`) and a unique model name; the records and the registered
model are read back."""

from __future__ import annotations

import subprocess
from pathlib import Path

import mlflow
import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from mlflow import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_GIT_COMMIT

from modelloop.cli import cli
from modelloop.contract.registry import (
    BASELINE_METRIC_PREFIX,
    PARAM_METRIC,
    PARAM_TASK,
    PRODUCTION_ALIAS,
    RESOLVED_CONFIG_PATH,
    TAG_CONFIG_PATH,
    TAG_GATE,
    TEST_METRIC_PREFIX,
)
from modelloop.training.config import DatasetConfig, load_config, validate_config
from modelloop.training.datasets import load_dataset
from modelloop.training.metrics import better

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


@pytest.mark.parametrize(
    ("example", "task", "classes", "alias"),
    [
        ("breast_cancer.yaml", "classification", 2, None),  # binary, manual promotion
        ("wine.yaml", "classification", 3, None),  # three classes, manual promotion
        ("diabetes.yaml", "regression", None, PRODUCTION_ALIAS),  # auto promotion, first version
        ("demo.yaml", "classification", 2, PRODUCTION_ALIAS),  # a CSV file given on the command line
    ],
)
def test_example_trains_end_to_end(
    tracking_uri: str,
    model_name: str,
    tmp_path: Path,
    example: str,
    task: str,
    classes: int | None,
    alias: str | None,
) -> None:
    path = EXAMPLES / example
    overrides = ["study.n_trials=2", f"model_name={model_name}"]
    if example == "demo.yaml":
        rows = load_dataset(DatasetConfig(name="sklearn:breast_cancer")).frame
        rows.to_csv(tmp_path / "demo.csv", index=False)
        overrides.append(f"dataset.path={tmp_path / 'demo.csv'}")
    argv = ["train", "--config", str(path), "--tracking-uri", tracking_uri]
    result = CliRunner().invoke(cli, [*argv, *[a for o in overrides for a in ("--set", o)]])
    assert result.exit_code == 0, result.output
    out = dict(line.split(": ", 1) for line in result.stdout.splitlines())
    assert out["model"] == f"{model_name} version 1"
    assert out["alias"] == (alias or "-")

    config = load_config(path, overrides)
    client = MlflowClient(tracking_uri)
    run = client.get_run(out["run_id"])
    metric = config.metric.name
    assert run.data.params[PARAM_TASK] == task and run.data.params[PARAM_METRIC] == metric
    model_score = run.data.metrics[f"{TEST_METRIC_PREFIX}{metric}"]
    baseline_score = run.data.metrics[f"{BASELINE_METRIC_PREFIX}{metric}"]
    assert better(model_score, baseline_score, config.direction) > 0  # a real model beats the baseline
    assert run.data.metrics["trials.complete"] + run.data.metrics["trials.pruned"] == 2

    # the code and the config that produced the run
    head = subprocess.run(
        ["git", "-C", str(EXAMPLES), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert run.data.tags[MLFLOW_GIT_COMMIT] == head
    assert run.data.tags[TAG_CONFIG_PATH] == str(path)
    resolved = mlflow.artifacts.load_text(f"runs:/{out['run_id']}/{RESOLVED_CONFIG_PATH}")
    assert validate_config(yaml.safe_load(resolved)) == config

    version = client.get_model_version(model_name, "1")
    assert version.tags[TAG_GATE] == "passed"
    aliases = client.get_registered_model(model_name).aliases
    assert aliases == ({alias: "1"} if alias else {})

    model = mlflow.sklearn.load_model(f"models:/{model_name}/1")
    frame = load_dataset(config.dataset).frame
    predictions = model.predict(frame.drop(columns=[config.target]))
    assert predictions.shape == (len(frame),)
    if task == "classification":
        labels = set(frame[config.target])
        assert set(model.classes_) == labels and set(np.unique(predictions)) <= labels
        assert len(labels) == classes
