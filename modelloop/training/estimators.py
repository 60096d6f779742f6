"""Estimator families a training can tune: their task, default search space, preprocessing and the reviewed
list of types skops must trust to load them.

The config validates a family and its search space here; the study builds one pipeline per trial with
`build_pipeline`; the model logger passes `trusted_types(family)` to MLflow's skops serialisation. The list is
explicit and reviewed: a type is added only when it is a plain scikit-learn data holder (never "trust all").
Families with `incremental_param` grow that parameter in stages (warm start) and report a validation score
after each stage, so the median pruner can stop poor trials early.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import pandas as pd
from sklearn.base import BaseEstimator, clone
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

Task = Literal["classification", "regression"]

# Types outside skops' default trust, reviewed one by one (tests/unit/training/test_estimators.py checks each
# family's fitted pipeline needs exactly these):
#: HistGradientBoosting's fitted trees (arrays of nodes).
_HGB_TRUSTED = ("sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",)
#: A decision tree's node arrays (random forests).
_TREE_TRUSTED = ("sklearn.tree._tree.Tree",)
#: The dtype descriptor SimpleImputer records when fitted (linear models need imputation); holds no code.
_IMPUTER_TRUSTED = ("numpy.dtype",)


@dataclass(frozen=True)
class Family:
    """One estimator family."""

    task: Task
    estimator: type[BaseEstimator]
    default_space: Mapping[str, Mapping[str, Any]]
    defaults: Mapping[str, Any] = field(default_factory=dict)
    linear: bool = False  # impute and standardise numeric features first (trees take NaN as it is)
    incremental_param: str | None = None  # grown in stages with warm_start for pruning
    trusted: tuple[str, ...] = ()


_LOG_C = {"type": "float", "low": 1e-3, "high": 1e2, "log": True}
_FOREST_SPACE = {
    "n_estimators": {"type": "int", "low": 20, "high": 200},
    "max_depth": {"type": "int", "low": 2, "high": 16},
    "min_samples_leaf": {"type": "int", "low": 1, "high": 10},
}
_HGB_SPACE = {
    "learning_rate": {"type": "float", "low": 0.01, "high": 0.3, "log": True},
    "max_iter": {"type": "int", "low": 20, "high": 200},
    "max_leaf_nodes": {"type": "int", "low": 8, "high": 64},
    "l2_regularization": {"type": "float", "low": 1e-6, "high": 1.0, "log": True},
}

FAMILIES: dict[str, Family] = {
    "logistic_regression": Family(
        "classification",
        LogisticRegression,
        {"C": _LOG_C},
        defaults={"max_iter": 1000},
        linear=True,
        trusted=_IMPUTER_TRUSTED,
    ),
    "random_forest_classifier": Family(
        "classification",
        RandomForestClassifier,
        _FOREST_SPACE,
        incremental_param="n_estimators",
        trusted=_TREE_TRUSTED,
    ),
    "hist_gradient_boosting_classifier": Family(
        "classification",
        HistGradientBoostingClassifier,
        _HGB_SPACE,
        defaults={"early_stopping": False},
        incremental_param="max_iter",
        trusted=_HGB_TRUSTED,
    ),
    "ridge": Family("regression", Ridge, {"alpha": _LOG_C}, linear=True, trusted=_IMPUTER_TRUSTED),
    "random_forest_regressor": Family(
        "regression",
        RandomForestRegressor,
        _FOREST_SPACE,
        incremental_param="n_estimators",
        trusted=_TREE_TRUSTED,
    ),
    "hist_gradient_boosting_regressor": Family(
        "regression",
        HistGradientBoostingRegressor,
        _HGB_SPACE,
        defaults={"early_stopping": False},
        incremental_param="max_iter",
        trusted=_HGB_TRUSTED,
    ),
}


def family_task(name: str) -> Task:
    return FAMILIES[name].task


def trusted_types(name: str) -> list[str]:
    """The reviewed types skops must trust to load a model of this family (beyond its defaults)."""
    return list(FAMILIES[name].trusted)


def search_space(
    name: str, configured: Mapping[str, Any] | None, *, fixed: Mapping[str, Any] = {}
) -> dict[str, dict[str, Any]]:
    """The search space as plain dicts: the configured one, or the family's default without the parameters
    the config fixes."""
    if configured is None:
        return {k: dict(v) for k, v in FAMILIES[name].default_space.items() if k not in fixed}
    return {k: (v.model_dump() if hasattr(v, "model_dump") else dict(v)) for k, v in configured.items()}


def check_search_space(
    name: str, params: Mapping[str, Any], space: Mapping[str, Any] | None
) -> tuple[str, str] | None:
    """(field, problem) when fixed params or the search space name unknown or invalid hyperparameters."""
    family = FAMILIES[name]
    known = set(family.estimator().get_params())
    for key in params:
        if key not in known:
            return f"params.{key}", f"{family.estimator.__name__} has no parameter {key!r}"
    for key in space or {}:
        if key not in known:
            return f"search_space.{key}", f"{family.estimator.__name__} has no parameter {key!r}"
        if key in params:
            return f"search_space.{key}", "is both fixed in params and searched"
    try:
        est = family.estimator(**{**family.defaults, **params})
        est._validate_params()
    except (TypeError, ValueError) as exc:
        return "params", str(exc).splitlines()[0][:200]
    return None


def categorical_columns(x: pd.DataFrame) -> list[str]:
    """Columns treated as categories: strings, categories and booleans."""
    return [
        str(c)
        for c in x.columns
        if not pd.api.types.is_numeric_dtype(x[c]) or pd.api.types.is_bool_dtype(x[c])
    ]


def build_pipeline(name: str, params: Mapping[str, Any], *, columns: pd.DataFrame, seed: int) -> Pipeline:
    """An unfitted pipeline (imputation, scaling or one-hot encoding as the family needs, then the model)."""
    family = FAMILIES[name]
    kwargs = {**family.defaults, **params}
    est = family.estimator(**kwargs)
    if "random_state" in est.get_params() and "random_state" not in kwargs:
        est.set_params(random_state=seed)
    numeric_steps: list[tuple[str, Any]] = []
    if family.linear:
        numeric_steps = [("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]
    cats = categorical_columns(columns)
    if not cats:
        return Pipeline([*numeric_steps, ("model", est)]) if numeric_steps else Pipeline([("model", est)])
    nums = [str(c) for c in columns.columns if str(c) not in cats]
    # a missing category is a category of its own to OneHotEncoder; unseen ones are ignored
    onehot = OneHotEncoder(handle_unknown="ignore")
    numeric: Any = Pipeline(numeric_steps) if numeric_steps else "passthrough"
    prep = ColumnTransformer([("numeric", numeric, nums), ("categorical", onehot, cats)])
    return Pipeline([("prepare", prep), ("model", est)])


def with_params(pipeline: Pipeline, params: Mapping[str, Any]) -> Pipeline:
    """A fresh copy of `pipeline` with the model's parameters changed."""
    out: Pipeline = clone(pipeline)
    out.set_params(**{f"model__{k}": v for k, v in params.items()})
    return out


__all__ = [
    "FAMILIES",
    "Family",
    "build_pipeline",
    "categorical_columns",
    "check_search_space",
    "family_task",
    "search_space",
    "trusted_types",
    "with_params",
]
