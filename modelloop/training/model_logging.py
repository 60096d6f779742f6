"""Logging the trained model to the active MLflow run with the flavour made for it (`training.serialization`
decides which, and how it is serialised), with its signature, an input example, pinned requirements and the
configured code paths.

Called inside the run the model belongs to (MLflow's fluent API): `training.records.log_outcome` for the
trained model, `training.distill` for a student. `log_with_profile` also logs the reference profile the
scoring server and monitoring read, built from the same test rows the signature is inferred from.
"""

from __future__ import annotations

import importlib
import warnings
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Literal

import mlflow
import pandas as pd
from mlflow.models import infer_signature

from modelloop.contract.profile import build_profile, profile_summary
from modelloop.contract.registry import (
    MODEL_ARTIFACT_PATH,
    REFERENCE_PROFILE_PATH,
    REFERENCE_PROFILE_SUMMARY_PATH,
)
from modelloop.training.config import TrainingConfig
from modelloop.training.serialization import flavour_of, serialization_of, skops_trusted

#: What every logged model needs to load, beside its flavour's own package.
_BASE_REQUIREMENTS = ("scikit-learn", "numpy", "scipy", "pandas")


def requirements(flavour: str, serialization: str) -> list[str]:
    """What loading the model needs, pinned to this environment. Given explicitly because MLflow's inference
    (loading the model in a subprocess) takes seconds."""
    names = list(_BASE_REQUIREMENTS)
    if serialization == "skops":
        names.append("skops")
    if serialization == "pickle":
        names.append("cloudpickle")
    if flavour != "sklearn":
        names.append(flavour)
    out = []
    for name in names:
        try:
            out.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            out.append(name)
    return out


def log_model(config: TrainingConfig, model: Any, *, signature: Any, input_example: pd.DataFrame) -> Any:
    """Log `model` to the active run; returns MLflow's ModelInfo."""
    flavour = flavour_of(model)
    serialization = serialization_of(config, model)
    kwargs: dict[str, Any] = {
        "name": MODEL_ARTIFACT_PATH,
        "signature": signature,
        "input_example": input_example,
        "pip_requirements": requirements(flavour, serialization),
    }
    if config.estimator.code_paths:
        kwargs["code_paths"] = [str(p) for p in config.estimator.code_paths]
    if serialization in ("skops", "pickle"):
        kwargs["serialization_format"] = serialization
    if serialization == "skops":
        kwargs["skops_trusted_types"] = skops_trusted(config)
    # mlflow.sklearn, mlflow.lightgbm, mlflow.xgboost or mlflow.catboost
    module = importlib.import_module(f"mlflow.{flavour}")
    return module.log_model(model, **kwargs)


def log_with_profile(
    config: TrainingConfig,
    model: Any,
    x_test: pd.DataFrame,
    *,
    task: Literal["classification", "regression"],
) -> Any:
    """The reference profile (machine JSON and readable summary) of `model`'s answers on `x_test`, then the
    model with the signature inferred from the same rows; returns MLflow's ModelInfo."""
    predictions = pd.Series(model.predict(x_test))
    profile = build_profile(x_test, predictions, task=task)
    mlflow.log_text(profile.model_dump_json(), REFERENCE_PROFILE_PATH)
    mlflow.log_text(profile_summary(profile), REFERENCE_PROFILE_SUMMARY_PATH)
    with warnings.catch_warnings():
        # MLflow's hint about integer columns (the pipelines impute missing values, so they may go missing)
        warnings.simplefilter("ignore", category=UserWarning)
        warnings.simplefilter("ignore", category=FutureWarning)
        signature = infer_signature(x_test, predictions.to_numpy())
        return log_model(config, model, signature=signature, input_example=x_test.head(3))


__all__ = ["log_model", "log_with_profile", "requirements"]
