"""The promotion gate: is the new model better than the baseline, and not worse than production, on the same
test set?

Called by `training.run` before the new version is registered, so the verdict is written with the version
in one
step. The production version is the one holding the `production` alias (or, in an older registry, the newest
version in the deprecated `Production` stage); it is loaded from the registry and scored on this training's
test
rows. A production model that cannot score them (other columns, a broken artifact) fails the gate with that
reason:
a person decides then.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from modelloop.contract.errors import InvalidInputError
from modelloop.contract.registry import PRODUCTION_ALIAS, STAGE_FOR_ROLE, Role
from modelloop.training.config import PromotionConfig
from modelloop.training.metrics import Direction, Task, better, evaluate

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Production:
    """The version holding production now, and its metrics on this test set (None: it could not score)."""

    version: str
    metrics: dict[str, float] | None
    problem: str | None = None


@dataclass(frozen=True)
class GateResult:
    passed: bool
    reasons: list[str]
    margin: float  # how much the model beats its strongest competitor on the gate metric (negative: trails)
    production: Production | None = None
    details: dict[str, Any] = field(default_factory=dict)


def production_version(client: MlflowClient, name: str) -> str | None:
    """The version holding the production alias, or the newest in the deprecated Production stage."""
    try:
        return str(client.get_model_version_by_alias(name, PRODUCTION_ALIAS).version)
    except MlflowException as exc:
        if exc.error_code not in {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"}:
            raise
    try:
        versions = client.search_model_versions(f"name = '{name}'")
    except MlflowException:
        return None
    staged = [int(v.version) for v in versions if v.current_stage == STAGE_FOR_ROLE[Role.CHAMPION]]
    return str(max(staged)) if staged else None


def score_production(
    client: MlflowClient, name: str, x: pd.DataFrame, y: pd.Series, *, task: Task, metric: str
) -> Production | None:
    """Load the production version and score it on (x, y)."""
    version = production_version(client, name)
    if version is None:
        return None
    import mlflow.sklearn

    try:
        model = mlflow.sklearn.load_model(f"models:/{name}/{version}")
    except Exception as exc:  # any loading failure (missing artifact, other flavor, untrusted type)
        log.warning("production version %s of %s cannot be loaded: %s", version, name, type(exc).__name__)
        return Production(version, None, f"cannot be loaded ({type(exc).__name__})")
    try:
        return Production(version, evaluate(model, x, y, task, required=metric))
    except (ValueError, KeyError, InvalidInputError) as exc:
        log.warning(
            "production version %s of %s cannot score the test set: %s", version, name, type(exc).__name__
        )
        return Production(version, None, f"cannot score this test set ({type(exc).__name__})")


def decide(
    policy: PromotionConfig,
    *,
    metric: str,
    direction: Direction,
    model: dict[str, float],
    baseline: dict[str, float],
    production: Production | None,
) -> GateResult:
    """The gate's verdict, with one reason per comparison and the margin to the strongest competitor."""
    reasons: list[str] = []
    passed = True
    over_base = better(model[metric], baseline[metric], direction)
    if over_base > policy.min_improvement_over_baseline:
        reasons.append(f"beats the baseline on {metric} by {over_base:+.4g}")
    else:
        passed = False
        need = policy.min_improvement_over_baseline
        reasons.append(f"does not beat the baseline on {metric} by more than {need:g} ({over_base:+.4g})")
    margin = over_base
    if production is not None:
        if production.metrics is None:
            passed = False
            reasons.append(f"production version {production.version} {production.problem}; not compared")
        else:
            over_prod = better(model[metric], production.metrics[metric], direction)
            margin = min(margin, over_prod)
            if over_prod >= -policy.max_regression_vs_production:
                reasons.append(f"{metric} {over_prod:+.4g} vs production version {production.version}")
            else:
                passed = False
                reasons.append(
                    f"trails production version {production.version} on {metric} by {-over_prod:.4g} "
                    f"(allowed {policy.max_regression_vs_production:g})"
                )
    else:
        reasons.append("no production version to compare with")
    return GateResult(passed=passed, reasons=reasons, margin=margin, production=production)


__all__ = ["GateResult", "Production", "decide", "production_version", "score_production"]
