"""The gate's verdict against the baseline and production, which alias a version gets, and a registry that
cannot be reached (an error, never "no production version")."""

from __future__ import annotations

import socket

import pandas as pd
import pytest

from modelloop.adapters.mlflow_registry import MlflowModelRegistry
from modelloop.contract.errors import UnavailableError
from modelloop.contract.registry import CHALLENGER_ALIAS, PRODUCTION_ALIAS
from modelloop.training.config import PromotionConfig
from modelloop.training.gate import Production, decide, score_production
from modelloop.training.registration import choose_alias


def test_beats_baseline_and_matches_production() -> None:
    result = decide(
        PromotionConfig(),
        metric="roc_auc",
        direction="maximize",
        model={"roc_auc": 0.95},
        baseline={"roc_auc": 0.5},
        production=Production("3", {"roc_auc": 0.94}),
    )
    assert result.passed
    assert result.margin == pytest.approx(0.01)
    assert result.reasons == [
        "beats the baseline on roc_auc by +0.45",
        "roc_auc +0.01 vs production version 3",
    ]


def test_minimised_metric_and_a_tolerated_regression() -> None:
    result = decide(
        PromotionConfig(max_regression_vs_production=0.5),
        metric="rmse",
        direction="minimize",
        model={"rmse": 10.2},
        baseline={"rmse": 20.0},
        production=Production("1", {"rmse": 10.0}),
    )
    assert result.passed and result.margin == pytest.approx(-0.2)


@pytest.mark.parametrize(
    ("policy", "model", "production", "reason"),
    [
        (PromotionConfig(), 0.5, None, "does not beat the baseline on roc_auc by more than 0 (+0)"),
        (PromotionConfig(min_improvement_over_baseline=0.2), 0.6, None, "by more than 0.2 (+0.1)"),
        (
            PromotionConfig(),
            0.9,
            Production("2", {"roc_auc": 0.95}),
            "trails production version 2 on roc_auc by 0.05",
        ),
        (
            PromotionConfig(),
            0.9,
            Production("2", None, "cannot be loaded (MlflowException)"),
            "production version 2 cannot be loaded",
        ),
    ],
)
def test_failures_say_why(
    policy: PromotionConfig, model: float, production: Production | None, reason: str
) -> None:
    result = decide(
        policy,
        metric="roc_auc",
        direction="maximize",
        model={"roc_auc": model},
        baseline={"roc_auc": 0.5},
        production=production,
    )
    assert not result.passed
    assert any(reason in r for r in result.reasons), result.reasons


@pytest.mark.parametrize(
    ("policy", "configured", "passed", "has_production", "alias"),
    [
        ("manual", None, True, False, None),
        ("auto", None, False, False, None),
        ("auto", None, True, False, PRODUCTION_ALIAS),
        ("auto", None, True, True, CHALLENGER_ALIAS),
        ("auto", PRODUCTION_ALIAS, True, True, PRODUCTION_ALIAS),
    ],
)
def test_alias_choice(
    policy: str, configured: str | None, passed: bool, has_production: bool, alias: str | None
) -> None:
    assert (
        choose_alias(policy=policy, configured=configured, passed=passed, has_production=has_production)
        == alias
    )


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_an_unreachable_registry_is_an_error_not_no_production(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    registry = MlflowModelRegistry(f"http://127.0.0.1:{closed_port()}")
    with pytest.raises(UnavailableError, match="unreachable while resolving m@production"):
        score_production(
            registry, "m", pd.DataFrame({"a": [1.0]}), pd.Series([1]), task="classification", metric="roc_auc"
        )
