"""Logging the trained model to the active MLflow run with the flavour made for it (`training.serialization`
decides which, and how it is serialised), with its signature, an input example, pinned requirements and the
configured code paths.

Called by `training.records.log_outcome` inside the parent run (MLflow's fluent API).
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import mlflow  # noqa: F401 (the flavours below are its submodules)
import pandas as pd

from modelloop.contract.registry import MODEL_ARTIFACT_PATH
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


__all__ = ["log_model", "requirements"]
