"""The promotion gate: is the new model better than the baseline, and not worse than production, on the same
test set?

Called by `training.run` before the new version is registered, so the verdict is written with the version in
one step. The production version is the one holding the `production` alias (or, in an older registry, the
newest version in the deprecated `Production` stage), resolved through the registry port; it is loaded through
the MLflow adapter (scikit-learn flavour only) and scored on this training's test rows. A production model
that cannot score them (other columns, a broken artifact) fails the gate with that reason: a person decides
then. A registry that cannot be reached is an error (UnavailableError), never "no production version".
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from modelloop.adapters.mlflow_registry import MlflowModelRegistry
from modelloop.contract.errors import InvalidInputError, ModelLoadError
from modelloop.contract.registry import Role
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


def score_production(
    registry: MlflowModelRegistry, name: str, x: pd.DataFrame, y: pd.Series, *, task: Task, metric: str
) -> Production | None:
    """Load the production version and score it on (x, y); None when no version holds production.

    UnavailableError / RegistryRefusedError when the registry cannot answer (the gate cannot decide)."""
    version = registry.resolve_role(name, Role.CHAMPION)
    if version is None:
        return None
    try:
        model = registry.load_model(name, version, sklearn_only=True).model
    except ModelLoadError as exc:  # a missing artifact, another flavour, an untrusted type
        log.warning("production version %s of %s cannot be loaded: %s", version, name, exc.cause)
        return Production(version, None, f"cannot be loaded ({exc.cause or type(exc).__name__})")
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


__all__ = ["GateResult", "Production", "decide", "score_production"]
