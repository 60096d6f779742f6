"""Distillation's pieces: softened labels, a student fitted on them (any estimator taking sample weights),
the rows the teacher labels, and the config's rules."""

from __future__ import annotations

import copy
import re
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.ensemble import HistGradientBoostingRegressor, RandomForestClassifier

from modelloop.contract.errors import ConfigError
from modelloop.training.config import validate_config
from modelloop.training.distill import fit_student, soft_labels, teacher_rows
from modelloop.training.splits import Split

CONFIG: dict[str, Any] = {
    "model_name": "teacher",
    "dataset": {"name": "sklearn:breast_cancer"},
    "estimator": {"family": "random_forest_classifier"},
    "metric": {"name": "roc_auc"},
    "distill": {"student": {"family": "logistic_regression"}, "temperature": 2.0},
}


def test_temperature_softens_and_one_keeps_the_probabilities() -> None:
    p = np.array([[0.9, 0.1], [0.5, 0.5], [0.0, 1.0]])
    assert np.allclose(soft_labels(p, 1.0), [[0.9, 0.1], [0.5, 0.5], [1e-12, 1.0]])
    soft = soft_labels(p, 3.0)
    assert np.allclose(soft.sum(axis=1), 1.0)
    assert 0.5 < soft[0, 0] < 0.9 and np.allclose(soft[1], 0.5)
    assert np.argmax(soft[[0, 2]], axis=1).tolist() == [0, 1]  # the ranking stays


def rows(task: str) -> Split:
    x, y = (load_breast_cancer if task == "classification" else load_diabetes)(return_X_y=True, as_frame=True)
    return Split(x[:250], y[:250], x[250:350], y[250:350], x[350:], y[350:])


def test_a_classifier_student_learns_the_teachers_soft_labels() -> None:
    data = rows("classification")
    config = validate_config(CONFIG)
    teacher = RandomForestClassifier(n_estimators=20, random_state=0).fit(data.fit_x, data.fit_y)
    student = fit_student(config, teacher, teacher_rows(config, data))
    assert list(student.classes_) == list(teacher.classes_)
    agree = np.mean(student.predict(data.x_test) == teacher.predict(data.x_test))
    assert agree > 0.9


def test_a_regressor_student_learns_the_teachers_predictions() -> None:
    data = rows("regression")
    config = validate_config(
        {
            **CONFIG,
            "dataset": {"name": "sklearn:diabetes"},
            "estimator": {"family": "hist_gradient_boosting_regressor"},
            "metric": {"name": "rmse"},
            "distill": {"student": {"family": "ridge", "params": {"alpha": 1e-3}}},
        }
    )
    teacher = HistGradientBoostingRegressor(max_iter=30).fit(data.fit_x, data.fit_y)
    student = fit_student(config, teacher, teacher_rows(config, data))
    corr = np.corrcoef(student.predict(data.x_test), teacher.predict(data.x_test))[0, 1]
    assert corr > 0.8


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"on": "train+unlabelled"}, "distill.unlabelled: on: train+unlabelled needs unlabelled"),
        ({"unlabelled": {"name": "sklearn:breast_cancer"}}, "distill.unlabelled: is only used with on:"),
        ({"student": {"family": "ridge"}}, "distill.student: the model is a classification estimator"),
        ({"student": {"family": "nope"}}, "distill.student.family: unknown estimator 'nope'"),
        (
            {
                "student": {
                    "family": "logistic_regression",
                    "search_space": {"C": {"type": "float", "low": 1, "high": 2}},
                }
            },
            "distill.student.search_space: a student is not tuned",
        ),
        ({"model_name": "teacher"}, "distill.model_name: must differ from model_name"),
        ({"temperature": 0}, "distill.temperature: Input should be greater than 0"),
    ],
)
def test_bad_distill_is_one_clear_error(change: dict[str, Any], expected: str) -> None:
    data = copy.deepcopy(CONFIG)
    data["distill"].update(change)
    with pytest.raises(ConfigError, match=re.escape(expected)):
        validate_config(data)


def test_yaml_reads_on_as_true_and_it_still_means_on() -> None:
    import yaml

    data = copy.deepcopy(CONFIG)
    data["distill"].update(yaml.safe_load("on: train"))
    assert validate_config(data).distill.on == "train"  # type: ignore[union-attr]
