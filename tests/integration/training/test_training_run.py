"""A tiny training end to end against a real MLflow server: what the parent run, the trial runs and the
registered version hold; the gate against baseline and production; manual and auto promotion."""

from __future__ import annotations

import json

import mlflow
import pytest
from mlflow import MlflowClient

from modelloop.contract.profile import ReferenceProfile
from modelloop.contract.registry import (
    BASELINE_METRIC_PREFIX,
    CHALLENGER_ALIAS,
    PARAM_DIRECTION,
    PARAM_METRIC,
    PARAM_TARGET,
    PARAM_TASK,
    PRODUCTION_ALIAS,
    REFERENCE_PROFILE_PATH,
    RESOLVED_CONFIG_PATH,
    TAG_GATE,
    TAG_GATE_MARGIN,
    TAG_GATE_REASONS,
    TAG_RUN_KIND,
    TAG_TRAINING_RUN,
    TAG_TRIGGERED_BY,
    TEST_METRIC_PREFIX,
)
from modelloop.training import run_training
from modelloop.training.config import validate_config
from modelloop.training.records import (
    COMPARISON_TABLE_PATH,
    HISTORY_PLOT_PATH,
    IMPORTANCE_PLOT_PATH,
    PRODUCTION_METRIC_PREFIX,
)
from modelloop.training.trial_runs import TAG_TRIAL_STATE
from tests.integration.training.conftest import tiny_config


def test_training_records_everything_and_registers_a_version(tracking_uri: str, model_name: str) -> None:
    config = tiny_config(model_name, study__n_trials=4)
    result = run_training(config, tracking_uri=tracking_uri, triggered_by="monitoring-run-42")
    client = MlflowClient(tracking_uri)

    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags[TAG_RUN_KIND] == "training"
    assert run.data.tags[TAG_TRIGGERED_BY] == "monitoring-run-42"
    assert run.data.params[PARAM_METRIC] == "roc_auc"
    assert run.data.params[PARAM_DIRECTION] == "maximize"
    assert run.data.params[PARAM_TASK] == "classification"
    assert run.data.params[PARAM_TARGET] == "target"
    assert run.data.params["baseline"] == "dummy:prior"
    assert "best.C" in run.data.params
    metrics = run.data.metrics
    assert metrics[f"{TEST_METRIC_PREFIX}roc_auc"] == result.metrics["roc_auc"] > 0.9
    assert metrics[f"{BASELINE_METRIC_PREFIX}roc_auc"] == result.baseline_metrics["roc_auc"] == 0.5
    assert {f"{TEST_METRIC_PREFIX}accuracy", f"{BASELINE_METRIC_PREFIX}accuracy"} <= set(metrics)
    assert metrics["trials.complete"] + metrics["trials.pruned"] == 4
    assert metrics["trials.unlogged"] == 0
    assert not any(k.startswith(PRODUCTION_METRIC_PREFIX) for k in metrics)
    # the same numbers side by side in one table the UI shows, the optimised metric first
    table = mlflow.load_table(COMPARISON_TABLE_PATH, run_ids=[result.run_id])
    assert list(table.columns[:4]) == ["metric", "optimised", "model", "baseline"]
    assert "production" not in table.columns
    assert table.iloc[0][["metric", "optimised"]].tolist() == ["roc_auc", True]
    by_metric = table.set_index("metric")
    # (MLflow's table JSON keeps 10 significant digits)
    assert by_metric["model"].to_dict() == pytest.approx(result.metrics, rel=1e-9)
    assert by_metric["baseline"].to_dict() == pytest.approx(result.baseline_metrics, rel=1e-9)

    # lineage: the whole dataset and the test rows, with digests
    contexts = {d.tags[0].value: d.dataset for d in run.inputs.dataset_inputs}
    assert set(contexts) == {"training", "test"}
    assert (
        contexts["training"].digest
        and json.loads(contexts["training"].source)["uri"] == "sklearn:breast_cancer"
    )

    artifacts = {a.path for a in client.list_artifacts(result.run_id, "plots")}
    assert artifacts == {HISTORY_PLOT_PATH, IMPORTANCE_PLOT_PATH}
    resolved = mlflow.artifacts.load_text(f"runs:/{result.run_id}/{RESOLVED_CONFIG_PATH}")
    import yaml

    assert validate_config(yaml.safe_load(resolved)) == config
    profile = ReferenceProfile.model_validate_json(
        mlflow.artifacts.load_text(f"runs:/{result.run_id}/{REFERENCE_PROFILE_PATH}")
    )
    assert profile.task == "classification" and profile.n_rows == 143  # 25 % of 569 rows
    assert "mean_radius" in profile.features and profile.prediction is not None

    trials = client.search_runs(
        [run.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{result.run_id}'"
    )
    assert len(trials) == 4
    for trial in trials:
        assert trial.data.tags[TAG_RUN_KIND] == "trial"
        assert trial.info.status in {"FINISHED", "KILLED"}
        assert trial.info.end_time >= trial.info.start_time
        assert "C" in trial.data.params
        if trial.data.tags[TAG_TRIAL_STATE] == "COMPLETE":
            assert 0.5 < trial.data.metrics["validation.roc_auc"] <= 1.0

    version = client.get_model_version(model_name, result.version)
    assert version.run_id == result.run_id
    assert version.tags[TAG_GATE] == "passed" and result.gate_passed
    assert "beats the baseline on roc_auc" in version.tags[TAG_GATE_REASONS]
    assert float(version.tags[TAG_GATE_MARGIN]) > 0.4
    assert version.tags[TAG_TRAINING_RUN] == result.run_id
    assert result.promoted_alias is None  # manual policy: a person moves the alias
    assert client.get_registered_model(model_name).aliases == {}

    model = mlflow.sklearn.load_model(f"models:/{model_name}/{result.version}")
    info = mlflow.models.get_model_info(f"models:/{model_name}/{result.version}")
    assert info.signature is not None and "mean_radius" in info.signature.inputs.input_names()
    assert info.saved_input_example_info is not None
    assert model.predict(profile_rows()).shape == (3,)


def profile_rows():
    from modelloop.training.config import DatasetConfig
    from modelloop.training.datasets import load_dataset

    frame = load_dataset(DatasetConfig(name="sklearn:breast_cancer")).frame
    return frame.drop(columns=["target"]).head(3)


def test_auto_promotion_production_then_challenger_and_gate_failure(
    tracking_uri: str, model_name: str
) -> None:
    client = MlflowClient(tracking_uri)
    auto = {"promotion__policy": "auto"}
    first = run_training(tiny_config(model_name, **auto), tracking_uri=tracking_uri)
    assert first.gate_passed and first.promoted_alias == PRODUCTION_ALIAS
    assert client.get_model_version_by_alias(model_name, PRODUCTION_ALIAS).version == first.version

    second = run_training(tiny_config(model_name, **auto), tracking_uri=tracking_uri)
    assert second.gate_passed and second.promoted_alias == CHALLENGER_ALIAS
    run = client.get_run(second.run_id)
    # the production version was scored on the same test rows as the new model
    assert run.data.metrics[f"{PRODUCTION_METRIC_PREFIX}roc_auc"] == first.metrics["roc_auc"]
    table = mlflow.load_table(COMPARISON_TABLE_PATH, run_ids=[second.run_id]).set_index("metric")
    assert table.loc["roc_auc", "production"] == pytest.approx(first.metrics["roc_auc"], rel=1e-9)
    assert table.loc["roc_auc", "model"] == pytest.approx(second.metrics["roc_auc"], rel=1e-9)
    assert (
        f"vs production version {first.version}"
        in client.get_model_version(model_name, second.version).tags[TAG_GATE_REASONS]
    )
    assert client.get_model_version_by_alias(model_name, PRODUCTION_ALIAS).version == first.version

    # a model that cannot beat the baseline by the required margin fails the gate: registered, no alias moved
    strict = tiny_config(model_name, promotion__policy="auto", promotion__min_improvement_over_baseline=0.9)
    third = run_training(strict, tracking_uri=tracking_uri)
    assert third.gate_passed is False and third.promoted_alias is None
    tags = client.get_model_version(model_name, third.version).tags
    assert tags[TAG_GATE] == "failed"
    assert "does not beat the baseline on roc_auc by more than 0.9" in tags[TAG_GATE_REASONS]
    assert client.get_model_version_by_alias(model_name, CHALLENGER_ALIAS).version == second.version


def test_configured_alias_and_weaker_model_against_production(tracking_uri: str, model_name: str) -> None:
    client = MlflowClient(tracking_uri)
    strong = tiny_config(model_name, promotion__policy="auto", promotion__alias=PRODUCTION_ALIAS)
    first = run_training(strong, tracking_uri=tracking_uri)
    assert first.promoted_alias == PRODUCTION_ALIAS

    # one tiny tree beats the baseline but trails production on the same test rows: no alias moves
    weak = tiny_config(
        model_name,
        estimator={
            "family": "random_forest_classifier",
            "params": {"n_estimators": 1, "max_depth": 1, "max_features": 1},
            "search_space": {"min_samples_leaf": {"type": "int", "low": 1, "high": 3}},
        },
        promotion__policy="auto",
        promotion__alias=PRODUCTION_ALIAS,
    )
    second = run_training(weak, tracking_uri=tracking_uri)
    assert second.gate_passed is False and second.promoted_alias is None
    assert second.metrics["roc_auc"] > second.baseline_metrics["roc_auc"]
    tags = client.get_model_version(model_name, second.version).tags
    assert tags[TAG_GATE] == "failed"
    assert "beats the baseline" in tags[TAG_GATE_REASONS]
    assert f"trails production version {first.version} on roc_auc" in tags[TAG_GATE_REASONS]
    assert float(tags[TAG_GATE_MARGIN]) < 0
    assert client.get_model_version_by_alias(model_name, PRODUCTION_ALIAS).version == first.version

    # a model on other columns: production cannot score its test rows, so the gate fails with that reason
    other_columns = tiny_config(
        model_name, dataset__features=["mean_radius", "mean_texture"], promotion__policy="auto"
    )
    third = run_training(other_columns, tracking_uri=tracking_uri)
    assert third.gate_passed is False and third.promoted_alias is None
    reasons = client.get_model_version(model_name, third.version).tags[TAG_GATE_REASONS]
    assert f"production version {first.version} cannot score this test set" in reasons
