"""The finishing step (refit, record, register) runs once per training, however often it is started: two pods
of one index of the tuning Job at once (Kubernetes may run two pods for one index of an Indexed Job), and a
finishing step started again after a crash between registering the version and marking the study registered.
Each registers exactly one version."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
from mlflow import MlflowClient

from modelloop.contract.registry import TAG_TRAINING_RUN
from modelloop.training import run_training
from modelloop.training.config import load_config
from modelloop.training.registration import register
from modelloop.training.study import REGISTERED_ATTR, open_storage

from .test_local_workers import N_TRIALS, check_one_training, write_config


def test_two_pods_of_one_index_register_one_version(
    tracking_uri: str, model_name: str, fresh_postgres_url: str, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "train.yaml", model_name, storage=fresh_postgres_url, workers=2)
    argv = [sys.executable, "-m", "modelloop", "train", "--config", str(config), "--tracking-uri"]
    argv += [tracking_uri, "--tune-and-finish", "--quiet"]
    # both pods of index 0: the same host name and JOB_COMPLETION_INDEX, as Kubernetes gives them
    env = {**os.environ, "OMP_NUM_THREADS": "1", "JOB_COMPLETION_INDEX": "0"}
    pods = [subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    outputs = [p.communicate(timeout=600) for p in pods]
    for pod, (_, err) in zip(pods, outputs, strict=True):
        assert pod.returncode == 0, err.decode()
    client = MlflowClient(tracking_uri)
    [version] = client.search_model_versions(f"name = '{model_name}'")
    assert len(check_one_training(client, model_name, version.run_id)) == N_TRIALS
    # every pod that exits 0 has seen the version registered: one registered it, the other found it
    assert sum(b"registered before; nothing to do" in out for out, _ in outputs) == 1


def test_a_finishing_step_started_again_after_registering_finds_its_version(
    tracking_uri: str, model_name: str, tmp_path: Path
) -> None:
    storage = f"journal:///{tmp_path / 'study.log'}"
    config = load_config(write_config(tmp_path / "train.yaml", model_name, storage=storage))
    first = run_training(config, tracking_uri=tracking_uri)
    assert first.version == "1"
    # what a finisher killed right after registering leaves: the version, the study not marked, the run open
    study_storage = open_storage(storage)
    assert study_storage is not None
    study = optuna.load_study(study_name=config.study_name, storage=study_storage)
    study.set_user_attr(REGISTERED_ATTR, None)
    client = MlflowClient(tracking_uri)
    client.update_run(first.run_id, status="RUNNING")

    again = run_training(config, tracking_uri=tracking_uri)
    assert (again.run_id, again.version, again.trials_run) == (first.run_id, "1", 0)
    check_one_training(client, model_name, first.run_id)
    assert (
        optuna.load_study(study_name=config.study_name, storage=study_storage).user_attrs[REGISTERED_ATTR]
        == "1"
    )

    # registering the same training's model again returns its version, creating none
    [version] = client.search_model_versions(f"name = '{model_name}'")
    done = register(client, model_name, model_uri=version.source, model_id=None, run_id=first.run_id,
                    tags={TAG_TRAINING_RUN: first.run_id}, alias=None)  # fmt: skip
    assert done == "1" and len(client.search_model_versions(f"name = '{model_name}'")) == 1
