"""Small real models registered in a real MLflow server, for the tests of every part.

`register_reference_model` logs the reference workload of the benchmarks (breast-cancer data, StandardScaler +
HistGradientBoostingClassifier) the way training does: a run with the model (signature, input example, skops
format with an explicit list of trusted types), the reference profile at `REFERENCE_PROFILE_PATH`, and a new
registered version. Tests of `serving`, `monitoring` and `deploy` use it so they need no `training` code.
"""

from __future__ import annotations

from dataclasses import dataclass

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import infer_signature
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from modelloop.contract.profile import build_profile
from modelloop.contract.registry import MODEL_ARTIFACT_PATH, REFERENCE_PROFILE_PATH, TAG_RUN_KIND

TRUSTED_TYPES = ["sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"]


@dataclass(frozen=True)
class RegisteredModel:
    name: str
    version: str
    run_id: str
    features: pd.DataFrame  # the test rows the profile was built on


def register_reference_model(
    tracking_uri: str,
    name: str,
    *,
    task: str = "classification",
    max_iter: int = 20,
    seed: int = 0,
    broken: bool = False,
) -> RegisteredModel:
    """Train, log and register a small model; returns the new version. `broken=True` registers a version
    whose model artifact cannot be loaded (for rollback tests)."""
    client = mlflow.MlflowClient(tracking_uri)
    if task == "classification":
        data = load_breast_cancer(as_frame=True)
        est: object = HistGradientBoostingClassifier(max_iter=max_iter, random_state=seed)
    else:
        data = load_diabetes(as_frame=True)
        est = HistGradientBoostingRegressor(max_iter=max_iter, random_state=seed)
    x: pd.DataFrame = data.data
    x.columns = [c.replace(" ", "_") for c in x.columns]
    y = data.target
    pipe = Pipeline([("scale", StandardScaler()), ("model", est)])
    pipe.fit(x, y)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(f"tests-{name}")
    with mlflow.start_run() as run:
        mlflow.set_tag(TAG_RUN_KIND, "training")
        pred = np.asarray(pipe.predict(x))
        signature = infer_signature(x, pred)
        if broken:
            mlflow.log_text("not a model", f"{MODEL_ARTIFACT_PATH}/MLmodel")
            model_uri = f"runs:/{run.info.run_id}/{MODEL_ARTIFACT_PATH}"
        else:
            info = mlflow.sklearn.log_model(
                pipe,
                name=MODEL_ARTIFACT_PATH,
                signature=signature,
                input_example=x.head(3),
                serialization_format="skops",
                skops_trusted_types=TRUSTED_TYPES,
            )
            model_uri = info.model_uri
        profile = build_profile(x, pred, task="classification" if task == "classification" else "regression")
        mlflow.log_text(profile.model_dump_json(), REFERENCE_PROFILE_PATH)
    mv = mlflow.register_model(model_uri, name)
    client.set_model_version_tag(name, mv.version, "modelloop.test", "1")
    return RegisteredModel(name=name, version=str(mv.version), run_id=run.info.run_id, features=x)
