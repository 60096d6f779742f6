"""Model quality over a window, from the labels that have arrived (feedback joined by request id).

Called by `monitoring.job`. Classification: accuracy and F1 (binary for two classes, macro otherwise), and
ROC AUC when the logged predictions are scores in [0, 1] rather than labels. Regression: RMSE, MAE and R².
Names match the training run's test metrics (`test.<name>`), so each is shown beside its training value.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from sklearn import metrics as skm

log = logging.getLogger(__name__)

#: Metrics where a lower value is better (everything else: higher is better).
LOWER_IS_BETTER = frozenset({"rmse", "mae", "mse", "log_loss"})


@dataclass(frozen=True)
class Quality:
    """Quality over the labelled rows of a window."""

    labelled: int
    unusable_labels: int  # labels that could not be compared (wrong type), counted, not dropped silently
    metrics: dict[str, float]


def _label_text(value: Any) -> str:
    if isinstance(value, float) and math.isfinite(value) and value == round(value):
        return str(int(value))
    if isinstance(value, bool):
        return str(int(value))
    return str(value)


def _is_score(values: np.ndarray) -> bool:
    if values.dtype.kind != "f" or values.size == 0:
        return False
    return bool(np.all((values >= 0) & (values <= 1)) and np.any(values != np.round(values)))


def join_labels(
    request_ids: pa.Array | pa.ChunkedArray | np.ndarray, labels: Mapping[str, Any]
) -> tuple[np.ndarray, list[Any]]:
    """Positions of the window rows that have a label, and those labels in the same order (vectorised:
    the window's request ids stay Arrow strings; only the labelled ones become Python objects)."""
    if not labels:
        return np.zeros(0, dtype=np.int64), []
    ids = (
        request_ids
        if isinstance(request_ids, pa.Array | pa.ChunkedArray)
        else pa.array(np.asarray(request_ids, dtype=object), pa.string())
    )
    found = pc.is_in(ids, value_set=pa.array(list(labels), pa.string()))
    positions = np.flatnonzero(np.asarray(found.to_numpy(zero_copy_only=False), dtype=bool))
    matched = pc.take(ids, pa.array(positions, pa.int64())).to_pylist()
    return positions.astype(np.int64), [labels[rid] for rid in matched]


def quality(
    task: Literal["classification", "regression"], predictions: np.ndarray, labels: list[Any]
) -> Quality:
    """Quality metrics of `predictions` against `labels` (same order, same length)."""
    if not labels:
        return Quality(0, 0, {})
    if task == "regression":
        y = np.array([_to_float(v) for v in labels], dtype=np.float64)
        pred = np.asarray(predictions, dtype=np.float64)
        ok = np.isfinite(y) & np.isfinite(pred)
        y, pred = y[ok], pred[ok]
        unusable = int((~ok).sum())
        if y.size == 0:
            return Quality(0, unusable, {})
        err = pred - y
        out = {"rmse": float(np.sqrt(np.mean(err**2))), "mae": float(np.mean(np.abs(err)))}
        if y.size > 1 and np.var(y) > 0:
            out["r2"] = float(skm.r2_score(y, pred))
        return Quality(int(y.size), unusable, out)
    truth = np.array([_label_text(v) for v in labels], dtype=object)
    pred_values = np.asarray(predictions)
    out = {}
    if _is_score(pred_values):
        # scores of the positive class "1": AUC on the scores, accuracy/F1 at 0.5
        positive = (truth == "1").astype(int)
        if len(set(positive.tolist())) == 2:
            out["roc_auc"] = float(skm.roc_auc_score(positive, pred_values))
        hard = np.where(pred_values >= 0.5, "1", "0").astype(object)
    else:
        hard = np.array([_label_text(v) for v in pred_values.tolist()], dtype=object)
    classes = sorted(set(truth.tolist()) | set(hard.tolist()), key=_class_order)
    out["accuracy"] = float(np.mean(truth == hard))
    if set(classes) <= {"0", "1"} or len(classes) == 2:
        # as training scores it: binary F1 of the larger class label (sklearn's classes_[1])
        positive = "1" if set(classes) <= {"0", "1"} else classes[1]
        out["f1"] = float(skm.f1_score(truth, hard, pos_label=positive, average="binary", zero_division=0.0))
    else:
        out["f1"] = float(skm.f1_score(truth, hard, average="macro", zero_division=0.0))
    return Quality(int(truth.size), 0, out)


def _class_order(label: str) -> tuple[int, float, str]:
    """Numbers in numeric order before other labels (as sklearn sorts integer classes)."""
    try:
        return (0, float(label), label)
    except ValueError:
        return (1, 0.0, label)


def _to_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def breached(value: float | None, *, floor: float | None, ceiling: float | None) -> bool:
    """True when a quality value is below its floor or above its ceiling."""
    if value is None:
        return False
    return (floor is not None and value < floor) or (ceiling is not None and value > ceiling)


__all__ = ["LOWER_IS_BETTER", "Quality", "breached", "join_labels", "quality"]
