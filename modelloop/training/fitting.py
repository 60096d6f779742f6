"""One trial's model and the registered one, whatever the config tunes: a built-in family, a class by import
path (`training.custom_estimator`) or your own objective function (`training.objective`).

Called by `training.study` (per trial) and `training.run` (the refit of the best trial, checked by
`training.serialization` before anything is recorded).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import optuna
import pandas as pd

from modelloop.training import objective, serialization
from modelloop.training.config import TrainingConfig
from modelloop.training.custom_estimator import add_code_paths, build_class_model, import_function
from modelloop.training.estimators import build_pipeline
from modelloop.training.splits import Split


def build_model(config: TrainingConfig, params: Mapping[str, Any], *, columns: pd.DataFrame) -> Any:
    """An unfitted model of a family or a class with `params` (the objective kind builds its own)."""
    est = config.estimator
    if est.family is not None:
        return build_pipeline(est.family, params, columns=columns, seed=config.seed)
    assert est.class_ is not None, "an objective builds its own model"
    return build_class_model(est.class_, params, preprocess=est.preprocess, columns=columns, seed=config.seed)


def objective_trial(config: TrainingConfig, trial: optuna.Trial, data: Split) -> Any:
    """One trial's model from the configured objective function."""
    name = config.estimator.objective
    assert name is not None
    add_code_paths(config.estimator.code_paths)
    data_in = objective.trial_data(data, task=config.task, seed=config.seed)
    return objective.fit_trial(import_function(name), name, trial, data_in)


def fit_final(config: TrainingConfig, best_params: Mapping[str, Any], data: Split) -> Any:
    """The model to register: the best params fitted on the training and validation rows; refused (a
    ConfigError) when skops would need types the config does not trust."""
    est = config.estimator
    if est.objective is not None:
        add_code_paths(est.code_paths)
        data_in = objective.final_data(data, task=config.task, seed=config.seed)
        model = objective.fit_final(import_function(est.objective), est.objective, best_params, data_in)
    else:
        model = build_model(config, {**est.params, **best_params}, columns=data.fit_x)
        model.fit(data.fit_x, data.fit_y)
    serialization.check_trusted(config, model)
    return model


__all__ = ["build_model", "fit_final", "objective_trial"]
