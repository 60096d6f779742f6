"""Distillation on the demo data (issue 15): the teacher's and the student's single-row predict latency and
the quality gap between them.

Workload: the demo's training config (`modelloop.cli.demo_loop.training_config`: HistGradientBoosting on the
demo's breast-cancer table, tuned for ROC AUC) with 20 trials and, as `distill`, a bare depth-6 decision tree
as the student, fitted on the teacher's probabilities softened at temperature 2, trained by `run_training`
against a real `mlflow server`. Both registered versions are then measured as `modelloop train` measures
them (`cli.served_latency`: loaded the way the scoring server loads them, `serving.model_host.load_model`,
with the numpy fast path where the model answers alike and, for the bare tree, its fitted tree's own
traversal, `serving.fast_input.tree_method`), one test row predicted many times in this process; the median
is each model's single-row latency as served (the model's share of a request: the gRPC round trip,
validation and batching around it are the same for both and not counted). The latencies
the training logged on the student's run (a DataFrame row straight into the model) are printed beside them.
Targets (the issue): student at least 5x faster, ROC AUC within 0.01 of the teacher's. Returns non-zero when
either is missed.

Run: `make bench` or `python bench/run.py distill` (about a minute; the machine is shared, expect noise).
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from pathlib import Path

TRIALS = 20
RUNS = 2000
SPEEDUP_TARGET = 5.0
GAP_TARGET = 0.01


def main() -> int:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    import optuna
    from mlflow import MlflowClient

    from modelloop.cli.demo_data import load_dataset
    from modelloop.cli.demo_loop import training_config
    from modelloop.cli.served_latency import served_latency_ms
    from modelloop.deploy.mlflow_server import MlflowServer
    from modelloop.training import run_training
    from modelloop.training.config import validate_config

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.simplefilter("ignore")
    with tempfile.TemporaryDirectory(prefix="bench-distill-") as tmp:
        table = Path(tmp) / "demo.csv"
        frame = load_dataset()
        frame.to_csv(table, index=False)
        data = training_config(table, TRIALS)
        data["model_name"] = "bench-distill-teacher"
        data["distill"] = {
            "student": {
                "class": "sklearn.tree.DecisionTreeClassifier",
                "params": {"max_depth": 6},
                "preprocess": "none",  # one estimator, no pipeline: the least per-call overhead
                "trusted_types": ["sklearn.tree._tree.Tree"],
            },
            "on": "train",
            "temperature": 2.0,
            "max_quality_gap": GAP_TARGET,
        }
        config = validate_config(data)
        server = MlflowServer(Path(tmp) / "mlflow")
        server.start(timeout=120)
        try:
            result = run_training(config, tracking_uri=server.url)
            assert result.student is not None and result.version is not None
            student = result.student
            run = MlflowClient(server.url).get_run(student.run_id)
            measure = served_latency_ms(server.url, runs=RUNS)  # what `modelloop train` logs, more runs
            row = frame.drop(columns=[config.target]).head(1)
            teacher_ms = measure(config.model_name, result.version, row)
            student_ms = measure(student.model_name, student.version, row)
        finally:
            server.stop()
    metrics = run.data.metrics
    speedup = teacher_ms / student_ms
    print(f"demo table, {TRIALS} trials, teacher HistGradientBoosting, student decision tree (depth 6, T=2)")
    print(f"{'':<28} {'teacher':>10} {'student':>10} {'ratio':>8}")
    print(f"{'served, ms/row (median)':<28} {teacher_ms:>10.3f} {student_ms:>10.3f} {speedup:>7.1f}x")
    logged_t, logged_s = metrics["latency.teacher_single_row_ms"], metrics["latency.student_single_row_ms"]
    logged_ratio = logged_t / logged_s
    print(f"{'DataFrame row, ms (logged)':<28} {logged_t:>10.3f} {logged_s:>10.3f} {logged_ratio:>7.1f}x")
    teacher_auc, student_auc = metrics["teacher.test.roc_auc"], metrics["test.roc_auc"]
    print(f"{'test ROC AUC':<28} {teacher_auc:>10.4f} {student_auc:>10.4f}")
    print(
        f"quality gap {student.quality_gap:+.4f} (target <= {GAP_TARGET}); served speedup {speedup:.1f}x "
        f"(target >= {SPEEDUP_TARGET:g}x); student gate {'passed' if student.gate_passed else 'failed'}"
    )
    return 0 if speedup >= SPEEDUP_TARGET and student.quality_gap <= GAP_TARGET else 1


if __name__ == "__main__":
    raise SystemExit(main())
