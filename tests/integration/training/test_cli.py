"""`modelloop train` through click: what it prints and its exit codes."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from mlflow import MlflowClient

from modelloop.cli import cli
from modelloop.deploy.mlflow_server import free_port


def write_config(path: Path, name: str, **extra: object) -> Path:
    data = {
        "model_name": name,
        "dataset": {"name": "sklearn:wine"},
        "split": {"kind": "stratified"},
        "estimator": {"family": "logistic_regression"},
        "metric": {"name": "accuracy"},
        "study": {"n_trials": 2},
        **extra,
    }
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_train_prints_the_result_and_the_ui_url(tracking_uri: str, model_name: str, tmp_path: Path) -> None:
    config = write_config(tmp_path / "train.yaml", model_name)
    result = CliRunner().invoke(
        cli,
        [
            "train",
            "--config",
            str(config),
            "--tracking-uri",
            tracking_uri,
            "--set",
            "promotion.policy=auto",
            "--triggered-by",
            "abc123",
        ],
    )
    assert result.exit_code == 0, result.output
    lines = dict(line.split(": ", 1) for line in result.stdout.splitlines())
    assert lines["model"] == f"{model_name} version 1"
    assert lines["gate"].startswith("passed")
    assert lines["alias"] == "production"
    assert lines["mlflow ui"].startswith(f"{tracking_uri}/#/experiments/")
    assert lines["mlflow ui"].endswith(f"/runs/{lines['run_id']}?workflowType=machine_learning")
    # progress and the summary table go to stderr
    assert "trial 2/2" in result.stderr and "test metric" in result.stderr


def test_tracking_uri_falls_back_to_the_settings(
    mlflow_server: str, model_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELLOOP_TRACKING_URI", mlflow_server)
    config = write_config(tmp_path / "train.yaml", model_name)
    result = CliRunner().invoke(cli, ["train", "--config", str(config), "--quiet"])
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    assert f"model: {model_name} version 1" in result.stdout


@pytest.mark.parametrize(
    ("overrides", "code", "message"),
    [
        (["--set", "estimator.family=xgboost"], 2, "estimator.family: unknown estimator 'xgboost'"),
        (["--set", "target=missing"], 2, "the dataset has no target column 'missing'"),
        (["--set", "study.n_trials"], 2, "expected key.path=value"),
        (["--tune-only"], 2, "study.storage: a tune-only worker needs a shared storage"),
    ],
)
def test_bad_input_exit_codes(
    tracking_uri: str, model_name: str, tmp_path: Path, overrides: list[str], code: int, message: str
) -> None:
    config = write_config(tmp_path / "train.yaml", model_name)
    result = CliRunner().invoke(
        cli, ["train", "--config", str(config), "--tracking-uri", tracking_uri, *overrides]
    )
    assert result.exit_code == code
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")
    assert message in result.stderr
    assert MlflowClient(tracking_uri).get_experiment_by_name(model_name) is None  # nothing was created


def test_unreachable_mlflow_exits_4(model_name: str, tmp_path: Path) -> None:
    config = write_config(tmp_path / "train.yaml", model_name)
    uri = f"http://127.0.0.1:{free_port()}"
    result = CliRunner().invoke(cli, ["train", "--config", str(config), "--tracking-uri", uri])
    assert result.exit_code == 4
    assert f"error: cannot reach MLflow at {uri}" in result.stderr
