"""Distillation: a lighter student trained on the registered teacher's soft labels, gated against it.

Called by `training.run` after the teacher's version is registered, when the config has `distill`. The
teacher labels the training and validation rows (and, with `on: train+unlabelled`, the rows of
`distill.unlabelled`):
- classification: its class probabilities, softened by `temperature` (q = softmax(log p / T)); the student,
  an ordinary classifier, is fitted on every row once per class with that class as label and q as the row's
  sample weight, which minimises the cross-entropy to the soft labels with any estimator taking
  `sample_weight` (it stays a plain scikit-learn classifier: served and monitored like any model);
- regression: its predictions, the student's targets.
The student is scored on the same test rows as the teacher; its gate passes when it trails the teacher by at
most `max_quality_gap` on the configured metric. Single-row predict latency (median of repeated calls on one
test row, a DataFrame straight into the model) is measured for both; with `served_latency` (what `modelloop
train` passes), also each registered version's latency as the scoring server answers the same row, its
loader and fast path included (`latency.served.*`). The student is recorded as a run
nested in the training's parent run, tagged with the teacher's version, with both models' test metrics,
latencies, the quality gap and its own reference profile, and registered as a version of
`distill.model_name` (default `<model_name>-student`) with the gate's verdict; the teacher's version gets the
tag `TAG_STUDENT` naming it. No alias is moved: a person promotes the student.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Metric
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

from modelloop.contract.errors import InvalidInputError
from modelloop.contract.registry import (
    TAG_GATE,
    TAG_GATE_MARGIN,
    TAG_GATE_REASONS,
    TAG_RUN_KIND,
    TAG_TRAINING_RUN,
    TEST_METRIC_PREFIX,
)
from modelloop.training import model_logging, records
from modelloop.training.config import TrainingConfig
from modelloop.training.datasets import load_dataset
from modelloop.training.fitting import build_model
from modelloop.training.metrics import better, evaluate
from modelloop.training.registration import register
from modelloop.training.serialization import check_trusted, version_tags
from modelloop.training.splits import Split

log = logging.getLogger(__name__)

#: On the student's run and version: the teacher, as NAME/VERSION.
TAG_TEACHER = "modelloop.distill.teacher"
#: On the teacher's version: its student, as NAME/VERSION.
TAG_STUDENT = "modelloop.distill.student"
TEACHER_METRIC_PREFIX = "teacher.test."
LATENCY_RUNS = 200


@dataclass(frozen=True)
class Distilled:
    """What a distillation produced."""

    run_id: str
    model_name: str
    version: str
    gate_passed: bool
    quality_gap: float  # how much the teacher beats the student on the metric (negative: the student wins)
    teacher_latency_ms: float
    student_latency_ms: float
    student_metrics: dict[str, float]
    #: single-row latency of each registered version as the scoring server answers (None: not measured)
    teacher_served_ms: float | None = None
    student_served_ms: float | None = None


#: (model name, version, one row) -> that registered version's single-row latency in ms as the scoring
#: server answers it (its loader and fast path); given by the caller (`modelloop train`, which may use
#: serving: training may not)
ServedLatency = Callable[[str, str, pd.DataFrame], float]


def student_config(config: TrainingConfig) -> TrainingConfig:
    """The config with the student as its estimator (what building, checking and logging it read)."""
    assert config.distill is not None
    return config.model_copy(update={"estimator": config.distill.student})


def soft_labels(probabilities: np.ndarray[Any, Any], temperature: float) -> np.ndarray[Any, Any]:
    """softmax(log p / T) per row: T > 1 softens, T < 1 sharpens, T = 1 keeps p."""
    logits = np.log(np.clip(probabilities, 1e-12, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    out = np.exp(logits)
    return np.asarray(out / out.sum(axis=1, keepdims=True))


def teacher_rows(config: TrainingConfig, data: Split) -> pd.DataFrame:
    """The rows the teacher labels: training and validation rows, plus the unlabelled ones when asked."""
    assert config.distill is not None
    rows = data.fit_x
    if config.distill.on == "train":
        return rows
    assert config.distill.unlabelled is not None
    extra = load_dataset(config.distill.unlabelled).frame
    missing = [c for c in rows.columns if c not in extra.columns]
    if missing:
        raise InvalidInputError(
            f"distill.unlabelled: the rows lack {len(missing)} feature column(s), e.g. {missing[0]!r}"
        )
    return pd.concat([rows, extra[list(rows.columns)].astype(rows.dtypes.to_dict())], ignore_index=True)


def fit_student(config: TrainingConfig, teacher: Any, rows: pd.DataFrame) -> Any:
    """The student fitted on the teacher's soft labels of `rows`."""
    assert config.distill is not None
    student_cfg = student_config(config)
    student = build_model(student_cfg, config.distill.student.params, columns=rows)
    if config.task == "regression":
        student.fit(rows, np.asarray(teacher.predict(rows)))
        return student
    classes = np.asarray(teacher.classes_)
    q = soft_labels(np.asarray(teacher.predict_proba(rows), dtype=np.float64), config.distill.temperature)
    x = pd.concat([rows] * len(classes), ignore_index=True)
    y = np.repeat(classes, len(rows))
    weight = q.T.reshape(-1)  # class-major, as the rows were repeated
    keep = weight > 1e-9
    key = "model__sample_weight" if hasattr(student, "steps") else "sample_weight"
    student.fit(x[keep], y[keep], **{key: weight[keep]})
    return student


def median_ms(call: Callable[[], Any], *, runs: int = LATENCY_RUNS) -> float:
    """Median wall time of `call()` over `runs` calls after one warm-up call, in milliseconds."""
    call()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000.0


def single_row_latency_ms(model: Any, row: pd.DataFrame, *, runs: int = LATENCY_RUNS) -> float:
    """Median wall time of one single-row prediction (probabilities for a classifier), in milliseconds."""
    predict: Callable[[pd.DataFrame], Any] = getattr(model, "predict_proba", None) or model.predict
    return median_ms(lambda: predict(row), runs=runs)


def distil(
    client: MlflowClient,
    config: TrainingConfig,
    *,
    teacher: Any,
    teacher_version: str,
    teacher_metrics: dict[str, float],
    data: Split,
    parent_run_id: str,
    experiment_id: str,
    tracking_uri: str,
    served_latency: ServedLatency | None = None,
) -> Distilled:
    """Train, gate, record and register the student (see the module docstring)."""
    assert config.distill is not None
    dcfg, metric = config.distill, config.metric.name
    rows = teacher_rows(config, data)
    student = fit_student(config, teacher, rows)
    student_cfg = student_config(config)
    check_trusted(student_cfg, student)
    student_metrics = evaluate(student, data.x_test, data.y_test, config.task, required=metric)
    gap = better(teacher_metrics[metric], student_metrics[metric], config.direction)
    passed = gap <= dcfg.max_quality_gap
    reason = (
        f"trails the teacher by {gap:.4g} on {metric} (at most {dcfg.max_quality_gap:g} allowed)"
        if gap > 0
        else f"matches or beats the teacher on {metric} ({-gap:.4g})"
    )
    row = data.x_test.head(1)
    teacher_ms = single_row_latency_ms(teacher, row)
    student_ms = single_row_latency_ms(student, row)
    name = dcfg.model_name or f"{config.model_name}-student"
    teacher_ref = f"{config.model_name}/{teacher_version}"
    run = client.create_run(
        experiment_id,
        tags={
            TAG_RUN_KIND: "distillation",
            MLFLOW_PARENT_RUN_ID: parent_run_id,
            MLFLOW_RUN_NAME: f"{name}-distillation",
            TAG_TEACHER: teacher_ref,
        },
    )
    run_id = run.info.run_id
    try:
        # a database registry (sqlite:///, postgresql://) reads the logged model back through MLflow's
        # process-wide tracking URI: keep it on this training's store until the version exists
        with records.fluent_tracking_uri(tracking_uri):
            info = _record(
                config,
                student,
                run_id=run_id,
                tracking_uri=tracking_uri,
                data=data,
                rows=len(rows),
                metrics={
                    **{f"{TEST_METRIC_PREFIX}{k}": v for k, v in student_metrics.items()},
                    **{f"{TEACHER_METRIC_PREFIX}{k}": v for k, v in teacher_metrics.items()},
                    "latency.teacher_single_row_ms": teacher_ms,
                    "latency.student_single_row_ms": student_ms,
                    "latency.speedup": teacher_ms / student_ms if student_ms > 0 else float("inf"),
                    f"quality_gap.{metric}": gap,
                },
            )
            tags = {
                TAG_GATE: "passed" if passed else "failed",
                TAG_GATE_REASONS: reason,
                TAG_GATE_MARGIN: f"{dcfg.max_quality_gap - gap:.6g}",
                TAG_TRAINING_RUN: run_id,
                TAG_TEACHER: teacher_ref,
                **version_tags(student_cfg, student),
            }
            version = register(
                client,
                name,
                model_uri=info.model_uri,
                model_id=getattr(info, "model_id", None),
                run_id=run_id,
                tags=tags,
                alias=None,
            )
        client.set_model_version_tag(config.model_name, teacher_version, TAG_STUDENT, f"{name}/{version}")
        served = _served(
            client, run_id, served_latency, teacher=(config.model_name, teacher_version),
            student=(name, version), row=row,
        )  # fmt: skip
        client.set_terminated(run_id, "FINISHED")
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    log.info(
        "student %s/%s: gate %s, %s; single-row latency %.3f ms (teacher %.3f ms)",
        name,
        version,
        "passed" if passed else "failed",
        reason,
        student_ms,
        teacher_ms,
    )
    return Distilled(run_id, name, version, passed, gap, teacher_ms, student_ms, student_metrics, *served)


def _served(
    client: MlflowClient,
    run_id: str,
    served_latency: ServedLatency | None,
    *,
    teacher: tuple[str, str],
    student: tuple[str, str],
    row: pd.DataFrame,
) -> tuple[float | None, float | None]:
    """Both registered versions' single-row latency as served, logged on the student's run; (None, None)
    without a measure or when it fails (a warning: the student is registered either way)."""
    if served_latency is None:
        return None, None
    try:
        teacher_ms, student_ms = served_latency(*teacher, row), served_latency(*student, row)
    except Exception as exc:  # the loader's or the validation's refusal: the student exists all the same
        log.warning("single-row latency as served not measured (%s)", type(exc).__name__, exc_info=True)
        return None, None
    metrics = {
        "latency.served.teacher_single_row_ms": teacher_ms,
        "latency.served.student_single_row_ms": student_ms,
        "latency.served.speedup": teacher_ms / student_ms if student_ms > 0 else float("inf"),
    }
    client.log_batch(run_id, metrics=[Metric(k, v, int(time.time() * 1000), 0) for k, v in metrics.items()])
    return teacher_ms, student_ms


def _record(
    config: TrainingConfig,
    student: Any,
    *,
    run_id: str,
    tracking_uri: str,
    data: Split,
    rows: int,
    metrics: dict[str, float],
) -> Any:
    """Params, metrics, reference profile and model on the student's run (MLflow's fluent API)."""
    assert config.distill is not None
    dcfg = config.distill
    with records.fluent_tracking_uri(tracking_uri), mlflow.start_run(run_id=run_id):
        mlflow.log_params(
            {
                "student": dcfg.student.label,
                **{f"student.{k}": v for k, v in dcfg.student.params.items()},
                "distill.on": dcfg.on,
                "distill.temperature": dcfg.temperature,
                "distill.max_quality_gap": dcfg.max_quality_gap,
                "distill.rows": rows,
            }
        )
        mlflow.log_metrics(metrics)
        return model_logging.log_with_profile(student_config(config), student, data.x_test, task=config.task)


__all__ = [
    "TAG_STUDENT",
    "TAG_TEACHER",
    "TEACHER_METRIC_PREFIX",
    "Distilled",
    "ServedLatency",
    "distil",
    "fit_student",
    "median_ms",
    "single_row_latency_ms",
    "soft_labels",
    "student_config",
    "teacher_rows",
]
