"""Helpers for training's integration tests: tiny configs on bundled scikit-learn data, unique model names."""

from __future__ import annotations

import secrets
from typing import Any

import pytest

from modelloop.training.config import TrainingConfig, validate_config


def tiny_config(name: str, **changes: Any) -> TrainingConfig:
    """Logistic regression on breast cancer, 3 trials: a training that takes a second or two."""
    data: dict[str, Any] = {
        "model_name": name,
        "dataset": {"name": "sklearn:breast_cancer"},
        "split": {"kind": "stratified", "test_size": 0.25},
        "estimator": {
            "family": "logistic_regression",
            "search_space": {"C": {"type": "float", "low": 0.01, "high": 10, "log": True}},
        },
        "metric": {"name": "roc_auc"},
        "study": {"n_trials": 3},
    }
    for path, value in changes.items():
        node = data
        *parents, last = path.split("__")
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    return validate_config(data)


@pytest.fixture
def model_name(request: pytest.FixtureRequest) -> str:
    return f"{request.node.name[:40].replace('[', '-').replace(']', '')}-{secrets.token_hex(3)}"
