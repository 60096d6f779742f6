"""Metrics a training can optimise and report, with their task and natural direction.

The study scores trials with `score`; the training run, the baseline and the gate use `evaluate`, which
computes every metric of the task on the same test set (the optimised one must be computable, the others are
skipped with a log line when the test set cannot support them, e.g. ROC AUC on a one-class test set).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from modelloop.contract.errors import InvalidInputError

log = logging.getLogger(__name__)

Task = Literal["classification", "regression"]
Direction = Literal["maximize", "minimize"]


@dataclass(frozen=True)
class Metric:
    task: Task
    direction: Direction
    needs_proba: bool
    fn: Callable[[np.ndarray, np.ndarray, np.ndarray], float]  # (y_true, y_pred, labels) or proba


def _average(labels: np.ndarray) -> str:
    return "binary" if labels.size == 2 else "macro"


def _pos(labels: np.ndarray) -> Any:
    return labels[1] if labels.size == 2 else 1


def _f1(y: np.ndarray, pred: np.ndarray, labels: np.ndarray) -> float:
    return float(skm.f1_score(y, pred, average=_average(labels), pos_label=_pos(labels), labels=labels))


def _precision(y: np.ndarray, pred: np.ndarray, labels: np.ndarray) -> float:
    return float(
        skm.precision_score(
            y, pred, average=_average(labels), pos_label=_pos(labels), labels=labels, zero_division=0
        )
    )


def _recall(y: np.ndarray, pred: np.ndarray, labels: np.ndarray) -> float:
    return float(
        skm.recall_score(
            y, pred, average=_average(labels), pos_label=_pos(labels), labels=labels, zero_division=0
        )
    )


def _roc_auc(y: np.ndarray, proba: np.ndarray, labels: np.ndarray) -> float:
    if labels.size == 2:
        return float(skm.roc_auc_score(y == labels[1], proba[:, 1]))
    return float(skm.roc_auc_score(y, proba, multi_class="ovr", labels=labels))


def _log_loss(y: np.ndarray, proba: np.ndarray, labels: np.ndarray) -> float:
    return float(skm.log_loss(y, proba, labels=labels))


METRICS: dict[str, Metric] = {
    "roc_auc": Metric("classification", "maximize", True, _roc_auc),
    "accuracy": Metric("classification", "maximize", False, lambda y, p, _: float(skm.accuracy_score(y, p))),
    "balanced_accuracy": Metric(
        "classification", "maximize", False, lambda y, p, _: float(skm.balanced_accuracy_score(y, p))
    ),
    "f1": Metric("classification", "maximize", False, _f1),
    "precision": Metric("classification", "maximize", False, _precision),
    "recall": Metric("classification", "maximize", False, _recall),
    "log_loss": Metric("classification", "minimize", True, _log_loss),
    "rmse": Metric(
        "regression", "minimize", False, lambda y, p, _: float(np.sqrt(skm.mean_squared_error(y, p)))
    ),
    "mae": Metric("regression", "minimize", False, lambda y, p, _: float(skm.mean_absolute_error(y, p))),
    "r2": Metric("regression", "maximize", False, lambda y, p, _: float(skm.r2_score(y, p))),
    "mape": Metric(
        "regression", "minimize", False, lambda y, p, _: float(skm.mean_absolute_percentage_error(y, p))
    ),
}


def metric_task(name: str) -> Task:
    return METRICS[name].task


def metric_direction(name: str) -> Direction:
    return METRICS[name].direction


def better(a: float, b: float, direction: Direction) -> float:
    """How much `a` is better than `b` (positive: better), whatever the direction."""
    return a - b if direction == "maximize" else b - a


def _labels(model: Any, y: pd.Series) -> np.ndarray:
    classes = getattr(model, "classes_", None)
    return np.asarray(classes) if classes is not None else np.unique(np.asarray(y))


def score(model: Any, x: pd.DataFrame, y: pd.Series, name: str) -> float:
    """One metric of a fitted model on (x, y); raises InvalidInputError when it is undefined there."""
    metric = METRICS[name]
    labels = _labels(model, y) if metric.task == "classification" else np.array([])
    try:
        out = model.predict_proba(x) if metric.needs_proba else model.predict(x)
        value = metric.fn(np.asarray(y), np.asarray(out), labels)
    except ValueError as exc:
        raise InvalidInputError(f"metric {name} cannot be computed on this data: {_short(exc)}") from None
    if not np.isfinite(value):
        raise InvalidInputError(f"metric {name} is not finite on this data")
    return value


def evaluate(model: Any, x: pd.DataFrame, y: pd.Series, task: Task, *, required: str) -> dict[str, float]:
    """Every metric of `task` for a fitted model on (x, y); `required` must be computable."""
    results: dict[str, float] = {}
    labels = _labels(model, y) if task == "classification" else np.array([])
    pred = np.asarray(model.predict(x))
    proba = None
    if task == "classification" and hasattr(model, "predict_proba"):
        proba = np.asarray(model.predict_proba(x))
    y_arr = np.asarray(y)
    for name, metric in METRICS.items():
        if metric.task != task:
            continue
        if metric.needs_proba and proba is None:
            continue
        try:
            value = metric.fn(y_arr, proba if metric.needs_proba else pred, labels)  # type: ignore[arg-type]
        except ValueError as exc:
            if name == required:
                raise InvalidInputError(
                    f"metric {name} cannot be computed on the test set: {_short(exc)}"
                ) from None
            log.info("metric %s skipped on the test set: %s", name, _short(exc))
            continue
        if np.isfinite(value):
            results[name] = value
    if required not in results:
        raise InvalidInputError(f"metric {required} is not finite on the test set")
    return results


def _short(exc: Exception) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__


__all__ = ["METRICS", "Metric", "better", "evaluate", "metric_direction", "metric_task", "score"]
