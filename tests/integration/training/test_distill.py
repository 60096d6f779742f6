"""Distillation end to end (examples/distill.yaml through `modelloop train`, two trials): the student is a
run nested in the training, linked to the teacher's version both ways, gated against the teacher on the same
test rows, with both single-row latencies and its own reference profile; it is registered, a real scoring
server answers a ModelInfer with the student's own prediction, and the traffic it logs is monitored by
`modelloop monitor` (a clean window holds, a shifted one drifts). With `on: train+unlabelled` the teacher
labels extra rows from a CSV file without a target column."""

from __future__ import annotations

import time
from pathlib import Path

import mlflow
import numpy as np
import pytest
from click.testing import CliRunner
from mlflow import MlflowClient

from modelloop.cli import cli
from modelloop.contract.profile import ReferenceProfile
from modelloop.contract.registry import (
    REFERENCE_PROFILE_PATH,
    TAG_GATE,
    TAG_GATE_REASONS,
    TAG_RUN_KIND,
    TAG_TRAINING_RUN,
    TEST_METRIC_PREFIX,
)
from modelloop.training import run_training
from modelloop.training.config import load_config
from modelloop.training.datasets import load_dataset
from modelloop.training.distill import TAG_STUDENT, TAG_TEACHER, TEACHER_METRIC_PREFIX
from tests.integration.training.served_windows import assert_monitored, logging_server, send_windows

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "distill.yaml"


def test_student_is_trained_gated_linked_registered_and_served(
    tracking_uri: str, model_name: str, tmp_path: Path
) -> None:
    sets = ["study.n_trials=2", f"model_name={model_name}"]
    argv = ["train", "--config", str(EXAMPLE), "--tracking-uri", tracking_uri]
    result = CliRunner().invoke(cli, [*argv, *[a for s in sets for a in ("--set", s)]])
    assert result.exit_code == 0, result.output
    out = dict(line.split(": ", 1) for line in result.stdout.splitlines())
    student_name = f"{model_name}-student"
    client = MlflowClient(tracking_uri)

    teacher = client.get_model_version(model_name, "1")
    assert teacher.tags[TAG_STUDENT] == f"{student_name}/1"
    student = client.get_model_version(student_name, "1")
    assert student.tags[TAG_TEACHER] == f"{model_name}/1"
    assert student.tags[TAG_GATE] in {"passed", "failed"}
    assert "roc_auc" in student.tags[TAG_GATE_REASONS]

    run = client.get_run(student.tags[TAG_TRAINING_RUN])
    assert run.info.status == "FINISHED"
    assert run.data.tags[TAG_RUN_KIND] == "distillation"
    assert run.data.tags["mlflow.parentRunId"] == out["run_id"]
    metrics = run.data.metrics
    gap = metrics[f"{TEACHER_METRIC_PREFIX}roc_auc"] - metrics[f"{TEST_METRIC_PREFIX}roc_auc"]
    assert metrics["quality_gap.roc_auc"] == gap
    assert (student.tags[TAG_GATE] == "passed") == (gap <= 0.01)
    teacher_run = client.get_run(out["run_id"])
    assert (
        metrics[f"{TEACHER_METRIC_PREFIX}roc_auc"] == teacher_run.data.metrics[f"{TEST_METRIC_PREFIX}roc_auc"]
    )
    assert metrics["latency.teacher_single_row_ms"] > 0 and metrics["latency.student_single_row_ms"] > 0
    # as the scoring server answers one row: a bare tree through its own traversal beats the teacher
    served_teacher = metrics["latency.served.teacher_single_row_ms"]
    served_student = metrics["latency.served.student_single_row_ms"]
    assert 0 < served_student < served_teacher
    assert metrics["latency.served.speedup"] == served_teacher / served_student
    assert out["student"].startswith(f"{student_name} version 1 (gate ")
    assert "one row as served" in out["student"]
    assert run.data.params["student"] == "sklearn.tree.DecisionTreeClassifier"
    assert run.data.params["distill.temperature"] == "2.0"
    profile = ReferenceProfile.model_validate_json(
        mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/{REFERENCE_PROFILE_PATH}")
    )
    assert profile.task == "classification" and profile.prediction is not None

    config = load_config(EXAMPLE, sets)
    rows = load_dataset(config.dataset).frame.drop(columns=[config.target]).head(4)
    expected = mlflow.sklearn.load_model(f"models:/{student_name}/1").predict(rows)
    features = load_dataset(config.dataset).frame.drop(columns=[config.target])
    with logging_server(tracking_uri, f"{student_name}/1", tmp_path) as scoring:
        start = time.time()
        answer = scoring.predict(student_name, rows)
        windows = send_windows(scoring, student_name, features, start)
    assert answer.predictions.tolist() == expected.tolist()
    # the student is monitored against its own reference profile, as any version
    assert_monitored(tracking_uri, tmp_path, student_name, "1", features, windows)


def test_the_teacher_also_labels_unlabelled_rows(tracking_uri: str, model_name: str, tmp_path: Path) -> None:
    config = load_config(EXAMPLE, ["study.n_trials=1", f"model_name={model_name}"])
    extra = load_dataset(config.dataset).frame.drop(columns=[config.target]).sample(100, random_state=1)
    extra.to_csv(tmp_path / "unlabelled.csv", index=False)
    distill = config.distill
    assert distill is not None
    on_more = distill.model_copy(
        update={"on": "train+unlabelled", "unlabelled": config.dataset.model_copy(
            update={"name": None, "path": tmp_path / "unlabelled.csv"})}
    )  # fmt: skip
    result = run_training(config.model_copy(update={"distill": on_more}), tracking_uri=tracking_uri)
    assert result.student is not None
    run = MlflowClient(tracking_uri).get_run(result.student.run_id)
    training_rows = 569 - 143  # all but the test rows (25 %, rounded up) of breast cancer
    assert run.data.params["distill.rows"] == str(training_rows + 100)
    assert run.data.params["distill.on"] == "train+unlabelled"
    assert np.isfinite(result.student.quality_gap)


def test_a_database_tracking_uri_registers_the_teacher_and_the_student(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MLflow users often point MLFLOW_TRACKING_URI at a database file; the registry then reads the logged
    model back through the process-wide URI (the student's registration once failed here: not found)."""
    monkeypatch.chdir(tmp_path)  # a database store's default artifact root is ./mlruns
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = load_config(EXAMPLE, ["study.n_trials=2", "model_name=bc-in-a-database"])
    result = run_training(config, tracking_uri=uri)
    assert result.version == "1"
    assert result.student is not None and result.student.version == "1"
    client = MlflowClient(uri)
    assert client.get_model_version("bc-in-a-database-student", "1").tags[TAG_TEACHER] == "bc-in-a-database/1"
    assert client.get_model_version("bc-in-a-database", "1").tags[TAG_STUDENT] == "bc-in-a-database-student/1"
