"""Two worker processes tune one study in PostgreSQL at once, nesting their trials under one parent run; a
final training resumes the full study, refits the best trial and registers one version."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import optuna
import yaml
from mlflow import MlflowClient

from modelloop.training import run_training
from modelloop.training.config import load_config
from modelloop.training.study import PARENT_RUN_ATTR
from modelloop.training.trial_runs import TAG_TRIAL_WORKER, WORKER_ATTR


def test_two_workers_share_one_study(
    tracking_uri: str, model_name: str, fresh_postgres_url: str, tmp_path: Path
) -> None:
    # a time budget, not a trial count: each worker tunes for its own 5 s, so both surely run trials
    # (with a shared count, the first worker up can fill the study before the second has imported)
    budget = 5.0
    config_path = tmp_path / "train.yaml"
    config_path.write_text(
        yaml.safe_dump(
            {
                "model_name": model_name,
                "dataset": {"name": "sklearn:breast_cancer"},
                "split": {"kind": "stratified"},
                "estimator": {"family": "logistic_regression"},
                "metric": {"name": "roc_auc"},
                "study": {"n_trials": None, "timeout": budget, "storage": fresh_postgres_url},
            }
        ),
        encoding="utf-8",
    )
    argv = [
        sys.executable,
        "-m",
        "modelloop",
        "train",
        "--config",
        str(config_path),
        "--tracking-uri",
        tracking_uri,
        "--tune-only",
        "--quiet",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    workers = [
        subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)
    ]
    outputs = [w.communicate(timeout=300) for w in workers]
    for worker, (out, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, err.decode()
        assert b"nothing registered" in out

    study = optuna.load_study(study_name=model_name, storage=fresh_postgres_url)
    trials = study.get_trials(deepcopy=False)
    finished = [
        t for t in trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    ]
    assert len(finished) >= 2
    by_worker = Counter(t.user_attrs[WORKER_ATTR] for t in trials)
    assert len(by_worker) == 2, by_worker  # both processes ran trials of the same study
    worker_pids = {str(w.pid) for w in workers}
    assert {w.rsplit(":", 1)[1] for w in by_worker} == worker_pids

    parent = study.user_attrs[PARENT_RUN_ATTR]
    client = MlflowClient(tracking_uri)
    assert client.get_run(parent).info.status == "RUNNING"  # the workers leave it to the final training
    nested = client.search_runs(
        [client.get_run(parent).info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent}'",
        max_results=1000,  # as many trials as the workers managed in their time budget
    )
    assert len(nested) == len(trials)
    assert {r.data.tags[TAG_TRIAL_WORKER] for r in nested} == set(by_worker)

    # the final training finds the study full, runs no trial, and records and registers under the same run
    final = load_config(config_path, [f"study.n_trials={len(trials)}", "study.timeout=null"])
    result = run_training(final, tracking_uri=tracking_uri)
    assert result.run_id == parent and result.trials_run == 0
    assert result.version == "1"
    run = client.get_run(parent)
    assert run.info.status == "FINISHED"
    # the refit uses a best trial (several can tie on the metric)
    best_cs = {str(t.params["C"]) for t in study.get_trials() if t.value == study.best_value}
    assert run.data.params["best.C"] in best_cs
    assert len(client.search_model_versions(f"name = '{model_name}'")) == 1
