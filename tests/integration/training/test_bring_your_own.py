"""Teams' own models end to end: LightGBM and XGBoost by import path and an objective function of one's own
(examples/) train through `modelloop train` into the real MLflow server, with every trial a nested run, the
baseline, the gate, the reference profile and a registered version recording its flavour and serialisation;
then a real scoring server loads the version, one ModelInfer over gRPC answers the model's own prediction,
and the traffic it logs is monitored by `modelloop monitor`: a run per window in MLflow for that version,
drift measured against its reference profile, the clean window not drifted and the shifted one drifted."""

from __future__ import annotations

import importlib
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest
from click.testing import CliRunner
from mlflow import MlflowClient
from mlflow.models import Model

from modelloop.cli import cli
from modelloop.contract.profile import ReferenceProfile
from modelloop.contract.registry import (
    BASELINE_METRIC_PREFIX,
    REFERENCE_PROFILE_PATH,
    TAG_GATE,
    TAG_RUN_KIND,
    TEST_METRIC_PREFIX,
)
from modelloop.training.config import load_config
from modelloop.training.datasets import load_dataset
from modelloop.training.metrics import better
from modelloop.training.serialization import TAG_FLAVOUR, TAG_SERIALIZATION
from tests.integration.training.served_windows import assert_monitored, logging_server, send_windows

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


@pytest.mark.parametrize(
    ("example", "overrides", "flavour", "serialization", "estimator"),
    [
        # a bare LGBMClassifier: MLflow's lightgbm flavour, skops with the config's trusted types
        ("lightgbm.yaml", [], "lightgbm", "skops", "lightgbm.LGBMClassifier"),
        # XGBRegressor in the preprocessing pipeline: MLflow's sklearn flavour, skops
        ("xgboost.yaml", [], "sklearn", "skops", "xgboost.XGBRegressor"),
        # the bare XGBRegressor: MLflow's xgboost flavour, XGBoost's own file format
        ("xgboost.yaml", ["estimator.preprocess=none"], "xgboost", "native", "xgboost.XGBRegressor"),
        # your own training code returning a scikit-learn pipeline
        ("custom_objective/config.yaml", [], "sklearn", "skops", "forest_objective.train:fit"),
    ],
    ids=["lightgbm", "xgboost-pipeline", "xgboost-bare", "objective"],
)
def test_own_model_trains_registers_and_serves(
    tracking_uri: str,
    model_name: str,
    tmp_path: Path,
    example: str,
    overrides: list[str],
    flavour: str,
    serialization: str,
    estimator: str,
) -> None:
    path = EXAMPLES / example
    sets = ["study.n_trials=2", f"model_name={model_name}", *overrides]
    argv = ["train", "--config", str(path), "--tracking-uri", tracking_uri]
    result = CliRunner().invoke(cli, [*argv, *[a for s in sets for a in ("--set", s)]])
    assert result.exit_code == 0, (result.output, [*argv, *sets])
    out = dict(line.split(": ", 1) for line in result.stdout.splitlines())
    assert out["model"] == f"{model_name} version 1"

    config = load_config(path, sets)
    client = MlflowClient(tracking_uri)
    run = client.get_run(out["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["estimator"] == estimator
    metric = config.metric.name
    model_score = run.data.metrics[f"{TEST_METRIC_PREFIX}{metric}"]
    baseline_score = run.data.metrics[f"{BASELINE_METRIC_PREFIX}{metric}"]
    assert better(model_score, baseline_score, config.direction) > 0
    trials = client.search_runs(
        [run.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{out['run_id']}'"
    )
    assert len(trials) == 2 and all(t.data.tags[TAG_RUN_KIND] == "trial" for t in trials)
    profile = ReferenceProfile.model_validate_json(
        mlflow.artifacts.load_text(f"runs:/{out['run_id']}/{REFERENCE_PROFILE_PATH}")
    )
    assert profile.task == config.task and profile.prediction is not None

    version = client.get_model_version(model_name, "1")
    assert version.tags[TAG_GATE] == "passed"
    assert version.tags[TAG_SERIALIZATION] == serialization
    assert version.tags[TAG_FLAVOUR] == flavour
    uri = f"models:/{model_name}/1"
    info = mlflow.models.get_model_info(uri)
    assert flavour in info.flavors and info.signature is not None
    assert info.saved_input_example_info is not None
    local = Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(tmp_path / "model")))
    if serialization == "skops":
        conf = Model.load(str(local / "MLmodel")).flavors[flavour]
        assert conf["serialization_format"] == "skops"
        assert set(config.estimator.trusted_types) <= set(conf["skops_trusted_types"])
    if config.estimator.code_paths:
        assert (local / "code" / "forest_objective" / "train.py").is_file()

    # the model's own answer, loaded with its flavour's loader ...
    model = importlib.import_module(f"mlflow.{flavour}").load_model(uri)
    rows = load_dataset(config.dataset).frame.drop(columns=[config.target]).head(5)
    expected = np.asarray(model.predict(rows))
    # ... is what the scoring server answers over gRPC; real traffic follows, logged, and each window is
    # monitored against the version's reference profile: the clean one holds, the shifted one drifts
    features = load_dataset(config.dataset).frame.drop(columns=[config.target])
    with logging_server(tracking_uri, f"{model_name}/1", tmp_path) as scoring:
        start = time.time()
        answer = scoring.predict(model_name, rows, probabilities=config.task == "classification")
        windows = send_windows(scoring, model_name, features, start)
    assert answer.model_version == "1"
    if config.task == "classification":
        assert answer.predictions.tolist() == expected.tolist()
        assert answer.probabilities is not None
        assert np.allclose(answer.probabilities, model.predict_proba(rows))
    else:
        assert np.allclose(answer.predictions, expected, rtol=1e-6)
    assert_monitored(tracking_uri, tmp_path, model_name, "1", features, windows)
