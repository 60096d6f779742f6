"""What a training leaves for people in a real MLflow: a model-training experiment, a run named after its
version with a description, the version's story as its description, retraining tags on a retrained version;
and a training stopped by SIGTERM ends its parent run KILLED, never RUNNING."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import yaml
from mlflow import MlflowClient

from modelloop.adapters.mlflow_experiments import EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND
from modelloop.contract.registry import (
    MONITORING_EXPERIMENT,
    TAG_GATE_PRODUCTION,
    TAG_MONITOR_WINDOW,
    TAG_RETRAIN_CAUSE,
    TAG_RUN_KIND,
    TAG_TRIGGERED_BY,
    TAG_TRIGGERED_BY_CAUSE,
)
from modelloop.training import run_training
from tests.integration.training.conftest import tiny_config


def test_versions_and_runs_tell_their_story(tracking_uri: str, model_name: str) -> None:
    client = MlflowClient(tracking_uri)
    first = run_training(tiny_config(model_name, promotion__policy="auto"), tracking_uri=tracking_uri)
    exp = client.get_experiment(first.experiment_id)
    assert exp.tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING_KIND
    run = client.get_run(first.run_id)
    assert run.info.run_name == "train v1 — initial training"
    assert "Trained and registered [version 1]" in run.data.tags["mlflow.note.content"]
    v1 = client.get_model_version(model_name, "1").description
    assert v1.startswith("Initial training · gate passed · not rolled out yet\n\n### Why version 1 exists\n")
    assert "### Gate: passed" in v1 and "| **roc\\_auc** (optimised) |" in v1 and "Not rolled out yet." in v1

    # a monitoring run of version 1 fires a retraining: version 2 names it, its cause and its drifted features
    monitoring_exp = client.get_experiment_by_name(MONITORING_EXPERIMENT)
    monitoring_exp_id = (
        monitoring_exp.experiment_id if monitoring_exp else client.create_experiment(MONITORING_EXPERIMENT)
    )
    monitoring = client.create_run(
        monitoring_exp_id,
        run_name="monitor it 04:10-04:12",
        tags={TAG_RUN_KIND: "monitoring", TAG_MONITOR_WINDOW: "w1", TAG_RETRAIN_CAUSE: "drift:1:w1"},
    )
    mid = monitoring.info.run_id
    client.log_param(mid, "model_version", "1")
    client.log_metric(mid, "drift.drifted.mean radius", 1.0)
    client.log_metric(mid, "drift.drifted.mean area", 0.0)
    client.set_terminated(mid)
    second = run_training(
        tiny_config(model_name, promotion__policy="auto"), tracking_uri=tracking_uri, triggered_by=mid
    )
    assert second.version == "2"
    mv = client.get_model_version(model_name, "2")
    assert mv.tags[TAG_TRIGGERED_BY] == mid and mv.tags[TAG_TRIGGERED_BY_CAUSE] == "drift:1:w1"
    assert mv.tags[TAG_GATE_PRODUCTION] == "1"
    assert client.get_run(second.run_id).info.run_name == "train v2 — retraining after drift"
    assert mv.description.startswith("Retraining after drift · gate passed · not rolled out yet\n")
    assert "### Why version 2 exists\nRetraining after drift: monitoring run [monitor" in mv.description
    assert f"#/experiments/{monitoring_exp_id}/runs/{mid}?workflowType=machine_learning" in mv.description
    assert "found `mean radius` drifted" in mv.description and "production (version 1)" in mv.description


def test_sigterm_ends_the_parent_run_killed(tracking_uri: str, model_name: str, tmp_path: Path) -> None:
    config = tmp_path / "train.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "model_name": model_name,
                "dataset": {"name": "sklearn:breast_cancer"},
                "split": {"kind": "stratified"},
                "estimator": {"family": "logistic_regression"},
                "metric": {"name": "roc_auc"},
                "study": {"n_trials": 100000},  # far more than it runs before it is stopped
            }
        ),
        encoding="utf-8",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "modelloop", "train", "--config", str(config), "--tracking-uri", tracking_uri],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.stderr is not None
    heard = []
    for line in proc.stderr:  # mid-search: once a few trials have finished
        heard.append(line)
        if line.startswith("trial 3/"):
            break
    else:
        raise AssertionError("the training never reported its third trial: " + "".join(heard[-20:]))
    assert not [h for h in heard if "Trial 0 finished" in h]  # Optuna's own line stays quiet
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(model_name)
    assert exp is not None
    [parent] = client.search_runs([exp.experiment_id], f"tags.`{TAG_RUN_KIND}` = 'training'")
    assert parent.info.status == "KILLED", err[-2000:]
    trials = client.search_runs([exp.experiment_id], f"tags.`{TAG_RUN_KIND}` = 'trial'")
    assert trials and all(t.info.status != "RUNNING" for t in trials)
