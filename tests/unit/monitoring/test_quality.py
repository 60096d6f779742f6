"""Quality metrics over labelled rows against sklearn or their direct formulas, to 1e-9, on fixed data."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from modelloop.monitoring.quality import breached, join_labels, quality

TOL = 1e-9


def test_binary_labels_accuracy_and_f1() -> None:
    rng = np.random.default_rng(1)
    truth = rng.integers(0, 2, 500)
    pred = np.where(rng.uniform(size=500) < 0.8, truth, 1 - truth)
    # labels arrive as JSON numbers: some as floats
    result = quality("classification", pred.astype(np.int64), [float(v) for v in truth])
    tp = int(np.sum((pred == 1) & (truth == 1)))
    fp = int(np.sum((pred == 1) & (truth == 0)))
    fn = int(np.sum((pred == 0) & (truth == 1)))
    assert result.labelled == 500 and result.unusable_labels == 0
    assert abs(result.metrics["accuracy"] - float(np.mean(pred == truth))) < TOL
    assert abs(result.metrics["f1"] - 2 * tp / (2 * tp + fp + fn)) < TOL
    assert "roc_auc" not in result.metrics  # labels, not scores


def test_scores_give_auc_and_thresholded_accuracy() -> None:
    rng = np.random.default_rng(2)
    truth = rng.integers(0, 2, 400)
    scores = np.clip(truth * 0.3 + rng.uniform(0, 0.7, 400), 0, 1)
    result = quality("classification", scores, truth.tolist())
    assert abs(result.metrics["roc_auc"] - skm.roc_auc_score(truth, scores)) < TOL
    hard = (scores >= 0.5).astype(int)
    assert abs(result.metrics["accuracy"] - skm.accuracy_score(truth, hard)) < TOL
    assert abs(result.metrics["f1"] - skm.f1_score(truth, hard)) < TOL


def test_string_and_multiclass_labels_follow_training() -> None:
    truth = ["yes", "no", "yes", "yes", "no", "no", "yes"]
    pred = np.array(["yes", "yes", "no", "yes", "no", "no", "yes"], dtype=object)
    result = quality("classification", pred, truth)
    # binary: F1 of the larger label, as training scores it (sklearn classes_[1] = "yes")
    assert abs(result.metrics["f1"] - skm.f1_score(truth, pred, pos_label="yes")) < TOL
    numbers = quality("classification", np.array([9, 10, 10, 9]), [10, 10, 9, 9])
    assert abs(numbers.metrics["f1"] - skm.f1_score([10, 10, 9, 9], [9, 10, 10, 9], pos_label=10)) < TOL
    three = quality("classification", np.array([0, 1, 2, 2, 1, 0]), [0, 1, 1, 2, 1, 2])
    expected = skm.f1_score([0, 1, 1, 2, 1, 2], [0, 1, 2, 2, 1, 0], average="macro")
    assert abs(three.metrics["f1"] - expected) < TOL
    assert abs(three.metrics["accuracy"] - 4 / 6) < TOL


def test_regression_metrics_and_unusable_labels() -> None:
    rng = np.random.default_rng(3)
    y = rng.normal(10, 3, 300)
    pred = y + rng.normal(0, 1, 300)
    labels: list[object] = y.tolist()
    labels[7] = "unknown"  # cannot be compared: counted, not silently dropped
    result = quality("regression", pred, labels)
    keep = np.arange(300) != 7
    err = pred[keep] - y[keep]
    assert result.labelled == 299 and result.unusable_labels == 1
    assert abs(result.metrics["rmse"] - float(np.sqrt(np.mean(err**2)))) < TOL
    assert abs(result.metrics["mae"] - float(np.mean(np.abs(err)))) < TOL
    ss_res = float(np.sum(err**2))
    ss_tot = float(np.sum((y[keep] - y[keep].mean()) ** 2))
    assert abs(result.metrics["r2"] - (1 - ss_res / ss_tot)) < TOL


def test_join_and_floor() -> None:
    ids = np.array(["a", "b", "c", "d"], dtype=object)
    positions, labels = join_labels(ids, {"c": 1, "a": 0, "zz": 1})
    assert positions.tolist() == [0, 2] and labels == [0, 1]
    assert quality("classification", np.array([]), []).metrics == {}
    assert breached(0.7, floor=0.8, ceiling=None) and not breached(0.8, floor=0.8, ceiling=None)
    assert breached(2.5, floor=None, ceiling=2.0) and not breached(None, floor=0.8, ceiling=None)


@pytest.mark.parametrize("value", [0.0, 1.0])
def test_a_single_class_window_still_scores(value: float) -> None:
    result = quality("classification", np.array([int(value)] * 5), [value] * 5)
    assert result.metrics["accuracy"] == 1.0 and "roc_auc" not in result.metrics
