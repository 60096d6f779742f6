"""Trainings from a SQL query (real PostgreSQL) and a Parquet file, a time-ordered split, the named heuristic
baselines, median pruning of a staged estimator, parallel trials, and resuming a study kept in SQLite; all
against the real MLflow server."""

from __future__ import annotations

import json
import secrets
import sys
from collections import Counter
from pathlib import Path

import mlflow
import numpy as np
import optuna
import pandas as pd
import pytest
import sqlalchemy as sa
from mlflow import MlflowClient

from modelloop.contract.profile import NumericProfile, ReferenceProfile
from modelloop.contract.registry import (
    BASELINE_METRIC_PREFIX,
    PARAM_TASK,
    REFERENCE_PROFILE_PATH,
    TEST_METRIC_PREFIX,
)
from modelloop.training import run_training
from modelloop.training.progress import StreamProgress
from modelloop.training.trial_runs import TAG_TRIAL_PRUNED, TAG_TRIAL_STATE
from tests.integration.training.conftest import tiny_config


def reference_profile(run_id: str) -> ReferenceProfile:
    return ReferenceProfile.model_validate_json(
        mlflow.artifacts.load_text(f"runs:/{run_id}/{REFERENCE_PROFILE_PATH}")
    )


def numeric(profile: ReferenceProfile, feature: str) -> NumericProfile:
    found = profile.features[feature]
    assert isinstance(found, NumericProfile)
    return found


def nested_runs(client: MlflowClient, run_id: str) -> list[mlflow.entities.Run]:
    experiment = client.get_run(run_id).info.experiment_id
    return client.search_runs(
        [experiment], filter_string=f"tags.mlflow.parentRunId = '{run_id}'", max_results=200
    )


def test_sql_query_with_a_time_split_and_a_stump_baseline(
    tracking_uri: str, model_name: str, postgres_url: str
) -> None:
    # 200 days; `day` grows with time, `signal` decides the label; rows are stored shuffled
    rng = np.random.default_rng(7)
    n = 200
    frame = pd.DataFrame(
        {
            "ts": pd.date_range("2024-01-01", periods=n, freq="D").strftime("%Y-%m-%d"),
            "day": np.arange(n, dtype=float),
            "signal": rng.normal(size=n),
        }
    )
    frame["label"] = (frame["signal"] + rng.normal(scale=0.5, size=n) > 0).astype(int)
    table = f"rows_{secrets.token_hex(3)}"
    engine = sa.create_engine(postgres_url)
    try:
        frame.sample(frac=1.0, random_state=1).to_sql(table, engine, index=False)
    finally:
        engine.dispose()
    query = f"SELECT ts, day, signal, label FROM {table}"
    config = tiny_config(
        model_name,
        dataset={"query": query, "url": postgres_url},
        target="label",
        split={"kind": "time", "time_column": "ts", "test_size": 0.25},
        baseline={"name": "decision_stump"},
    )
    result = run_training(config, tracking_uri=tracking_uri)
    client = MlflowClient(tracking_uri)
    run = client.get_run(result.run_id)

    # out-of-time test: exactly the 50 latest days, never the time column itself as a feature
    profile = reference_profile(result.run_id)
    assert set(profile.features) == {"day", "signal"} and profile.n_rows == 50
    day = numeric(profile, "day")
    assert (day.min, day.max) == (150.0, 199.0)

    assert run.data.params["baseline"] == "decision_stump"
    assert run.data.params["split.kind"] == "time"
    metrics = run.data.metrics
    assert metrics[f"{BASELINE_METRIC_PREFIX}roc_auc"] == result.baseline_metrics["roc_auc"]
    # a stump on `signal` is a real heuristic, well above a constant guess, and the model is compared to it
    assert result.baseline_metrics["roc_auc"] > 0.6
    assert metrics[f"{TEST_METRIC_PREFIX}roc_auc"] == result.metrics["roc_auc"]

    # lineage names the database (without its password) and the query
    sources = {d.tags[0].value: json.loads(d.dataset.source) for d in run.inputs.dataset_inputs}
    assert sources["training"]["query"] == query
    assert sources["training"]["uri"] == sa.make_url(postgres_url).render_as_string(hide_password=True)
    assert "modelloop-test" not in json.dumps(sources)


def test_parquet_regression_with_a_linear_baseline(
    tracking_uri: str, model_name: str, tmp_path: Path
) -> None:
    rng = np.random.default_rng(3)
    n = 160
    frame = pd.DataFrame(
        {"x1": rng.normal(size=n), "x2": rng.normal(size=n), "kind": rng.choice(["a", "b", "c"], size=n)}
    )
    frame["y"] = 3 * frame["x1"] ** 2 + frame["x2"] + frame["kind"].map({"a": 0.0, "b": 2.0, "c": -2.0})
    path = tmp_path / "rows.parquet"
    frame.to_parquet(path, index=False)
    config = tiny_config(
        model_name,
        dataset={"path": str(path)},
        target="y",
        split={"kind": "random", "test_size": 0.25},
        estimator={"family": "random_forest_regressor", "params": {"n_estimators": 20}},
        metric={"name": "rmse"},
        baseline={"name": "linear"},
        study={"n_trials": 2, "pruner": "none"},
    )
    result = run_training(config, tracking_uri=tracking_uri)
    run = MlflowClient(tracking_uri).get_run(result.run_id)
    assert run.data.params["baseline"] == "linear"
    assert run.data.params[PARAM_TASK] == "regression"
    # the forest captures the square and the category the linear baseline cannot
    assert result.metrics["rmse"] < result.baseline_metrics["rmse"]
    assert run.data.metrics[f"{BASELINE_METRIC_PREFIX}rmse"] == result.baseline_metrics["rmse"]
    sources = {d.tags[0].value: json.loads(d.dataset.source) for d in run.inputs.dataset_inputs}
    assert sources["training"]["uri"] == str(path.resolve())
    # the categorical column is profiled by category frequency for monitoring
    kinds = reference_profile(result.run_id).features["kind"]
    assert kinds.kind == "categorical" and set(kinds.frequencies) == {"a", "b", "c"}
    loaded = mlflow.sklearn.load_model(f"models:/{model_name}/{result.version}")
    assert loaded.predict(frame.drop(columns=["y"]).head(4)).shape == (4,)


def test_median_pruner_stops_staged_trials(tracking_uri: str, model_name: str) -> None:
    # learning rates from hopeless to good, scored by log loss (every rate scores differently): once 5 trials
    # completed, a trial worse than their median after a stage is stopped
    config = tiny_config(
        model_name,
        metric={"name": "log_loss"},
        estimator={
            "family": "hist_gradient_boosting_classifier",
            "params": {"max_iter": 20, "max_leaf_nodes": 8},
            "search_space": {"learning_rate": {"type": "float", "low": 1e-5, "high": 0.5, "log": True}},
        },
        study={"n_trials": 14},
    )
    result = run_training(config, tracking_uri=tracking_uri)
    client = MlflowClient(tracking_uri)
    runs = nested_runs(client, result.run_id)
    assert len(runs) == 14
    states = Counter(r.data.tags[TAG_TRIAL_STATE] for r in runs)
    assert states["PRUNED"] >= 1 and states["COMPLETE"] >= 5, states
    for trial in runs:
        history = client.get_metric_history(trial.info.run_id, "validation.log_loss.by_stage")
        steps = sorted(m.step for m in history)
        if trial.data.tags[TAG_TRIAL_STATE] == "PRUNED":
            # stopped early on purpose: fewer than all 4 stages, no final score; FINISHED, tagged pruned
            assert trial.info.status == "FINISHED" and trial.data.tags[TAG_TRIAL_PRUNED] == "true"
            assert 1 <= len(steps) < 4 and "validation.log_loss" not in trial.data.metrics
        else:
            assert steps == [0, 1, 2, 3]
            assert trial.data.metrics["validation.log_loss"] == {m.step: m.value for m in history}[3]
    parent = client.get_run(result.run_id).data.metrics
    assert parent["trials.pruned"] == states["PRUNED"]


def test_parallel_trials_and_a_resumed_sqlite_study(
    tracking_uri: str, model_name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    first = run_training(
        tiny_config(model_name, study={"n_trials": 4, "n_jobs": 2, "storage": storage}),
        tracking_uri=tracking_uri,
    )
    assert first.trials_run == 4
    client = MlflowClient(tracking_uri)
    assert len(nested_runs(client, first.run_id)) == 4

    # the same study name, a larger budget: the study continues with 2 more trials under a new parent run
    second = run_training(
        tiny_config(model_name, study={"n_trials": 6, "storage": storage}),
        tracking_uri=tracking_uri,
        progress=StreamProgress(sys.stderr),
    )
    assert second.trials_run == 2 and second.run_id != first.run_id
    assert (first.version, second.version) == ("1", "2")
    resumed = nested_runs(client, second.run_id)
    assert sorted(int(r.data.tags["modelloop.trial.number"]) for r in resumed) == [4, 5]
    study = optuna.load_study(study_name=model_name, storage=storage)
    assert len(study.trials) == 6
    run = client.get_run(second.run_id)
    assert run.data.params["best.C"] == str(study.best_params["C"])
    assert run.data.metrics["trials.complete"] + run.data.metrics["trials.pruned"] == 6
    err = capsys.readouterr().err
    # progress counts trials of the whole study, then the summary says how many this process ran
    assert "trial 5/6" in err and "trial 6/6" in err and "2 run by this process" in err
