"""Estimators by import path and objective functions in the config: one clear error per bad field; the model
each builds; the flavour and serialisation it is logged with, and the trusted types skops must be told."""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
import skops.io as sio
import yaml
from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import RandomForestClassifier
from sklearn.pipeline import Pipeline

from modelloop.contract.errors import ConfigError, InvalidInputError
from modelloop.training import objective, serialization
from modelloop.training.config import dump_config, load_config, validate_config
from modelloop.training.fitting import build_model, fit_final
from modelloop.training.splits import Split

LGBM: dict[str, Any] = {
    "model_name": "m",
    "dataset": {"name": "sklearn:breast_cancer"},
    "estimator": {
        "class": "lightgbm.LGBMClassifier",
        "params": {"verbose": -1, "n_estimators": 5},
        "search_space": {"num_leaves": {"type": "int", "low": 4, "high": 16}},
    },
    "metric": {"name": "roc_auc"},
}
EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def changed(**estimator: Any) -> dict[str, Any]:
    data = copy.deepcopy(LGBM)
    for key, value in estimator.items():
        if value is ...:
            del data["estimator"][key]
        else:
            data["estimator"][key] = value
    return data


def test_a_class_gets_its_task_from_scikit_learn_and_round_trips() -> None:
    config = validate_config(LGBM)
    assert config.task == "classification" and config.estimator.kind == "class"
    assert config.estimator.label == "lightgbm.LGBMClassifier"
    assert validate_config(yaml.safe_load(dump_config(config))) == config
    regressor = validate_config(
        {**changed(**{"class": "xgboost.XGBRegressor", "params": {}}), "metric": {"name": "rmse"}}
    )
    assert regressor.task == "regression"


@pytest.mark.parametrize(
    ("estimator", "expected"),
    [
        ({"class": "nosuchpackage.Model"}, "estimator.class: cannot import nosuchpackage"),
        ({"class": "lightgbm.NoSuchModel"}, "estimator.class: lightgbm has no class NoSuchModel"),
        ({"class": "Model"}, "estimator.class: 'Model' is not an import path like package.module.Class"),
        ({"class": "pathlib.Path"}, "does not follow scikit-learn's estimator API (no fit, predict"),
        ({"family": "ridge"}, "estimator: give exactly one of family, class or objective"),
        ({"search_space": ...}, "estimator.search_space: a class needs a search_space"),
        (
            {"class": "sklearn.ensemble.RandomForestClassifier", "params": {"bogus": 1}},
            "estimator.params.bogus: RandomForestClassifier has no parameter 'bogus'",
        ),
        (
            {
                "class": "sklearn.ensemble.RandomForestClassifier",
                "params": {"n_estimators": -1},
                "search_space": {},
            },
            "estimator.params: The 'n_estimators' parameter of RandomForestClassifier",
        ),
        (
            {"params": {"num_leaves": 4}},
            "estimator.search_space.num_leaves: is both fixed in params and searched",
        ),
        ({"task": "regression"}, "estimator.task: lightgbm.LGBMClassifier is a classification estimator"),
        ({"serialization": "pickle", "trusted_types": ["x.Y"]}, "estimator.trusted_types: is only used"),
        (
            {"class": "xgboost.XGBRegressor", "params": {}},
            "metric.name: roc_auc is a classification metric, but xgboost.XGBRegressor is a regression",
        ),
        (
            {"class": "sklearn.preprocessing.StandardScaler", "params": {}, "search_space": {}},
            "estimator.class: sklearn.preprocessing.StandardScaler does not follow scikit-learn's",
        ),
    ],
)
def test_bad_class_is_one_clear_error(estimator: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        validate_config(changed(**estimator))
    assert expected in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("estimator", "expected"),
    [
        ({"objective": "forest_objective.train:fit"}, "estimator.task: objective needs task"),
        (
            {"objective": "forest_objective.train", "task": "classification"},
            "estimator.objective: 'forest_objective.train' is not like package.module:function",
        ),
        (
            {"objective": "forest_objective.train:nope", "task": "classification"},
            "estimator.objective: forest_objective.train has no function nope",
        ),
        (
            {"objective": "forest_objective.train:fit", "task": "classification", "params": {"a": 1}},
            "estimator.params: is not used with objective",
        ),
        (
            {"family": "ridge", "class": ..., "params": {}, "task": "classification"},
            "estimator.task: ridge is a regression estimator",
        ),
        (
            {"family": "ridge", "class": ..., "params": {}, "trusted_types": ["x.Y"]},
            "is only used with class",
        ),
    ],
)
def test_bad_objective_or_family_is_one_clear_error(estimator: dict[str, Any], expected: str) -> None:
    code = str(EXAMPLES / "custom_objective" / "forest_objective")
    data = changed(**{"class": ..., "search_space": ..., "params": ..., "code_paths": [code], **estimator})
    if "family" in estimator:
        data["estimator"].pop("code_paths")
        data["estimator"].setdefault("params", LGBM["estimator"]["params"])
    with pytest.raises(ConfigError) as caught:
        validate_config(data)
    assert expected in str(caught.value)


def test_code_paths_are_relative_to_the_config_file() -> None:
    config = load_config(EXAMPLES / "custom_objective" / "config.yaml")
    assert config.estimator.code_paths == [EXAMPLES / "custom_objective" / "forest_objective"]
    assert str(EXAMPLES / "custom_objective") in sys.path


def split_rows(*, categorical: bool = True) -> Split:
    x, y = load_breast_cancer(return_X_y=True, as_frame=True)
    x = x.iloc[:, :6].copy()
    if categorical:
        x["shade"] = np.where(np.arange(len(x)) % 2, "light", "dark")
    return Split(x[:300], y[:300], x[300:450], y[300:450], x[450:], y[450:])


def test_a_class_sits_in_the_preprocessing_pipeline_or_stands_bare() -> None:
    data = split_rows()
    config = validate_config(LGBM)
    pipe = build_model(config, {"num_leaves": 8, "verbose": -1}, columns=data.x_train)
    assert isinstance(pipe, Pipeline) and [name for name, _ in pipe.steps] == ["prepare", "model"]
    assert pipe.named_steps["model"].get_params()["random_state"] == config.seed
    bare = build_model(validate_config(changed(preprocess="none")), {}, columns=data.x_train)
    assert type(bare).__name__ == "LGBMClassifier"
    assert serialization.flavour_of(pipe) == "sklearn" and serialization.flavour_of(bare) == "lightgbm"


def test_skops_must_be_told_every_type_the_model_needs() -> None:
    data = split_rows(categorical=False)  # a bare LightGBM takes numbers (or pandas categories)
    config = validate_config(changed(preprocess="none"))
    with pytest.raises(ConfigError) as caught:
        fit_final(config, {"num_leaves": 4}, data)
    assert str(caught.value) == (
        "estimator.trusted_types: loading the model needs skops to trust collections.OrderedDict, "
        "lightgbm.basic.Booster, lightgbm.sklearn.LGBMClassifier; review them and list them, or set "
        "serialization: pickle"
    )
    trusted = ["collections.OrderedDict", "lightgbm.basic.Booster", "lightgbm.sklearn.LGBMClassifier"]
    listed = validate_config(changed(preprocess="none", trusted_types=trusted))
    model = fit_final(listed, {"num_leaves": 4}, data)
    loaded = sio.loads(sio.dumps(model), trusted=trusted)
    assert np.array_equal(loaded.predict(data.x_test), model.predict(data.x_test))
    assert serialization.version_tags(listed, model) == {
        serialization.TAG_SERIALIZATION: "skops",
        serialization.TAG_FLAVOUR: "lightgbm",
    }
    pickled = validate_config(changed(preprocess="none", serialization="pickle"))
    model = fit_final(pickled, {"num_leaves": 4}, data)  # pickle: nothing to list, recorded as a tag
    assert serialization.version_tags(pickled, model)[serialization.TAG_SERIALIZATION] == "pickle"


def test_xgboost_bare_is_its_own_native_format() -> None:
    data = split_rows(categorical=False)  # bare XGBoost takes numbers only
    config = validate_config(changed(**{"class": "xgboost.XGBClassifier", "preprocess": "none"}))
    model = fit_final(config, {"num_leaves": 4, "n_estimators": 3}, data)  # XGBoost takes any keyword
    assert serialization.version_tags(config, model) == {
        serialization.TAG_SERIALIZATION: "native",
        serialization.TAG_FLAVOUR: "xgboost",
    }


def fit_forest(trial: optuna.Trial, data: objective.TrialData) -> RandomForestClassifier:
    model = RandomForestClassifier(n_estimators=trial.suggest_int("n_estimators", 2, 5), random_state=0)
    return model.fit(data.x_train, data.y_train)


def test_the_objective_gets_trial_rows_then_the_final_rows() -> None:
    numeric = split_rows(categorical=False)
    seen: list[tuple[int, bool]] = []

    def fit(trial: optuna.Trial, given: objective.TrialData) -> RandomForestClassifier:
        seen.append((len(given.x_train), given.final))
        return fit_forest(trial, given)

    trial = optuna.create_study().ask()
    model = objective.fit_trial(fit, "f", trial, objective.trial_data(numeric, task="classification", seed=0))
    assert hasattr(model, "classes_") and "n_estimators" in trial.params
    final = objective.fit_final(
        fit, "f", {"n_estimators": 3}, objective.final_data(numeric, task="classification", seed=0)
    )
    assert final.n_estimators == 3
    assert seen == [(300, False), (450, True)]


@pytest.mark.parametrize(
    ("returned", "expected"),
    [
        ("not a model", "estimator.objective: f returned str, not a model"),
        (RandomForestClassifier(), "estimator.objective: f returned a classifier without classes_"),
    ],
)
def test_the_objective_must_return_a_fitted_model(returned: Any, expected: str) -> None:
    with pytest.raises(InvalidInputError, match=expected):
        objective.checked_model(returned, "f", task="classification")
