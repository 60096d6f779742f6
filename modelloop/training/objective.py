"""Your own training code: `estimator.objective: mypackage.module:function`.

The function is called once per trial as `function(trial, data)` with the Optuna trial (it suggests its own
parameters with `trial.suggest_*`, may `trial.report` and raise `optuna.TrialPruned`) and a `TrialData`, and
returns a fitted model with `predict` (and `predict_proba` for a classifier scored on probabilities).
modelloop scores the model on the validation rows, so every trial is still a nested run with its params and
score. For the model it registers, modelloop calls the function once more with an `optuna.trial.FixedTrial`
holding the best trial's params and `data.final` true: the training rows are then the training and the
validation rows together (the validation rows stay given, for early stopping or checks, but are no longer
held out); the test rows are never given to the function.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import optuna
import pandas as pd

from modelloop.contract.errors import InvalidInputError
from modelloop.training.splits import Split


@dataclass(frozen=True)
class TrialData:
    """What the objective function is given besides the trial."""

    x_train: pd.DataFrame
    y_train: pd.Series
    x_valid: pd.DataFrame
    y_valid: pd.Series
    task: Literal["classification", "regression"]
    seed: int
    final: bool = False  # the refit of the best params (x_train then holds the validation rows too)


def trial_data(data: Split, *, task: Literal["classification", "regression"], seed: int) -> TrialData:
    """The rows one trial fits and is scored on."""
    return TrialData(data.x_train, data.y_train, data.x_val, data.y_val, task, seed)


def final_data(data: Split, *, task: Literal["classification", "regression"], seed: int) -> TrialData:
    """The rows the registered model is fitted on: training and validation rows together."""
    return TrialData(data.fit_x, data.fit_y, data.x_val, data.y_val, task, seed, final=True)


def checked_model(model: Any, name: str, *, task: str) -> Any:
    """The function's result when it is a fitted model; an InvalidInputError naming the function if not."""
    if not callable(getattr(model, "predict", None)):
        raise InvalidInputError(f"estimator.objective: {name} returned {type(model).__name__}, not a model")
    if task == "classification" and getattr(model, "classes_", None) is None:
        raise InvalidInputError(
            f"estimator.objective: {name} returned a classifier without classes_ (is it fitted?)"
        )
    return model


def fit_trial(function: Callable[..., Any], name: str, trial: optuna.Trial, data: TrialData) -> Any:
    """One trial's model."""
    return checked_model(function(trial, data), name, task=data.task)


def fit_final(function: Callable[..., Any], name: str, params: Mapping[str, Any], data: TrialData) -> Any:
    """The registered model: the function run again with the best params fixed."""
    trial = optuna.trial.FixedTrial(dict(params))
    return checked_model(function(trial, data), name, task=data.task)


__all__ = ["TrialData", "checked_model", "final_data", "fit_final", "fit_trial", "trial_data"]
