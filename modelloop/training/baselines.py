"""Baselines: what a tuned model must beat on the same test set.

`fit_baseline(config, task, x, y)` is called by the training run before tuning. `dummy` is scikit-learn's
`DummyClassifier` (prior) or `DummyRegressor` (mean) unless a strategy is named; the heuristics are a decision
stump (the best single split on one feature) and a plain linear model. The baseline runs through the same
preprocessing as the model, so it scores any table the model scores.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.dummy import DummyClassifier, DummyRegressor
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

from modelloop.contract.errors import ConfigError
from modelloop.training.config import BaselineConfig
from modelloop.training.estimators import build_pipeline


def _estimator(config: BaselineConfig, task: str, seed: int) -> BaseEstimator:
    classification = task == "classification"
    if config.name == "dummy":
        strategy = config.strategy or ("prior" if classification else "mean")
        try:
            dummy: BaseEstimator = (
                DummyClassifier(strategy=strategy) if classification else DummyRegressor(strategy=strategy)
            )
            dummy._validate_params()
        except ValueError:
            kind = "DummyClassifier" if classification else "DummyRegressor"
            raise ConfigError(f"baseline.strategy: {strategy!r} is not a {kind} strategy") from None
        return dummy
    if config.strategy is not None:
        raise ConfigError("baseline.strategy: only the dummy baseline takes a strategy")
    if config.name == "decision_stump":
        return (
            DecisionTreeClassifier(max_depth=1, random_state=seed)
            if classification
            else DecisionTreeRegressor(max_depth=1, random_state=seed)
        )
    return LogisticRegression(max_iter=1000) if classification else LinearRegression()


def describe(config: BaselineConfig, task: str) -> str:
    """A short name for the baseline, logged as a param."""
    if config.name == "dummy":
        return f"dummy:{config.strategy or ('prior' if task == 'classification' else 'mean')}"
    return config.name


def fit_baseline(config: BaselineConfig, *, task: str, x: pd.DataFrame, y: pd.Series, seed: int) -> Pipeline:
    """Fit the baseline on the training rows (with the same imputation/encoding the models get)."""
    est = _estimator(config, task, seed)
    family = "logistic_regression" if task == "classification" else "ridge"
    pipe = build_pipeline(family, {}, columns=x, seed=seed)
    pipe.steps[-1] = ("model", est)
    fitted: Any = pipe.fit(x, y)
    assert isinstance(fitted, Pipeline)
    return fitted


__all__ = ["describe", "fit_baseline"]
