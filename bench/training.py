"""MLflow bookkeeping per Optuna trial: modelloop's trial recorder against optuna-integration's MLflowCallback
(issue 2).

Workload (from the issue): the same Optuna study of 100 trivial trials (two suggested floats, no model)
against the same SQLite-backed MLflow tracking store, each trial recorded as a nested run of one parent run.
Measured here, in one process, one after another in each round:
- no recording (the anchor all overheads are taken from);
- `optuna_integration.MLflowCallback` (one fluent `start_run` per trial, nested in the parent run);
- `training.trial_runs.TrialRecorder` with the sink `modelloop train` picks for that URI (batched, written
  off the tuning thread), including the final flush (`close()`), so every trial is in the store when timed.
Overhead per trial = (time with recording - time without) / trials. Prints each round, the medians and the
ratio the issue sets as the target (ours at most 1/5 of the callback's). Returns non-zero when the recorder
lost a trial or the target is missed.

Second part (issue 18), parallel tuning: the demo config with 40 trials on 1 vs 2 local workers against a
real `mlflow server`: wall and CPU time, start-up share, serial fraction and the MLflow bookkeeping per trial
with several workers writing at once (bench/_parallel_tuning.py says what each figure is).
`--workers-only` runs only this part.

Run: `make bench` or `python bench/run.py training` (a few minutes; the machine is shared, expect noise).
"""

from __future__ import annotations

import logging
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import mlflow
import optuna
from mlflow import MlflowClient

TRIALS = 100
ROUNDS = 3
TARGET_RATIO = 5.0
NONE = "no recording"
CALLBACK = "optuna-integration MLflowCallback"
OURS = "modelloop TrialRecorder"


def objective(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", -10.0, 10.0)
    y = trial.suggest_float("y", -10.0, 10.0)
    return x * x + y * y


def new_study() -> optuna.Study:
    return optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))


def run_none(uri: str, round_no: int) -> float:
    study = new_study()
    start = time.perf_counter()
    study.optimize(objective, n_trials=TRIALS)
    return time.perf_counter() - start


def run_callback(uri: str, round_no: int) -> float:
    from optuna_integration.mlflow import MLflowCallback

    name = f"callback-{round_no}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(name)
    study = optuna.create_study(study_name=name, sampler=optuna.samplers.RandomSampler(seed=0))
    callback = MLflowCallback(tracking_uri=uri, metric_name="value", mlflow_kwargs={"nested": True})
    with mlflow.start_run(run_name="parent"):
        start = time.perf_counter()
        study.optimize(objective, n_trials=TRIALS, callbacks=[callback])
        elapsed = time.perf_counter() - start
    check_nested(uri, name, "value")
    return elapsed


def run_ours(uri: str, round_no: int) -> float:
    from modelloop.training.trial_runs import TrialRecorder, make_sink

    client = MlflowClient(uri)
    name = f"recorder-{round_no}"
    experiment = client.create_experiment(name)
    parent = client.create_run(experiment).info.run_id
    study = new_study()
    start = time.perf_counter()
    recorder = TrialRecorder(make_sink(uri, experiment_id=experiment, parent_run_id=parent, metric="value"))
    study.optimize(objective, n_trials=TRIALS, callbacks=[recorder])
    stats = recorder.close()
    elapsed = time.perf_counter() - start
    client.set_terminated(parent)
    if stats.written != TRIALS or stats.failed:
        raise RuntimeError(f"the recorder wrote {stats.written} of {TRIALS} trials ({stats.errors})")
    check_nested(uri, name, "validation.value")
    return elapsed


def check_nested(uri: str, experiment_name: str, metric: str) -> None:
    """Both variants really left one nested run per trial, each with the trial's value as `metric`."""
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(experiment_name)
    assert experiment is not None
    runs = client.search_runs(
        [experiment.experiment_id], filter_string="tags.mlflow.parentRunId != ''", max_results=1000
    )
    with_value = [r for r in runs if metric in r.data.metrics]
    if len(runs) != TRIALS or len(with_value) != TRIALS:
        raise RuntimeError(f"{experiment_name}: {len(runs)} nested runs, {len(with_value)} with a value")


def recorder_main() -> int:
    """The trial recorder against MLflowCallback (the first part, issue 2)."""
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.simplefilter("ignore")  # experimental-API and deprecation notices of both libraries
    variants: dict[str, Callable[[str, int], float]] = {
        NONE: run_none,
        CALLBACK: run_callback,
        OURS: run_ours,
    }
    with tempfile.TemporaryDirectory(prefix="bench-training-") as tmp:
        uri = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        MlflowClient(uri).search_experiments(max_results=1)  # create the schema outside the timings
        times: dict[str, list[float]] = {name: [] for name in variants}
        print(f"{TRIALS} trivial trials per study, SQLite tracking store, {ROUNDS} rounds")
        print(f"{'round':<6} {'variant':<36} {'seconds':>8} {'ms/trial overhead':>18}")
        for round_no in range(1, ROUNDS + 1):
            for name, run in variants.items():
                times[name].append(run(uri, round_no))
            base = times[NONE][-1]
            for name in variants:
                over = (times[name][-1] - base) / TRIALS * 1000
                print(f"{round_no:<6} {name:<36} {times[name][-1]:>8.2f} {over:>18.2f}")
        base = statistics.median(times[NONE])
        overhead = {
            name: max(statistics.median(times[name]) - base, 1e-9) / TRIALS * 1000
            for name in (CALLBACK, OURS)
        }
        print()
        print(
            f"median overhead per trial: {CALLBACK} {overhead[CALLBACK]:.2f} ms, "
            f"{OURS} {overhead[OURS]:.2f} ms"
        )
        ratio = overhead[CALLBACK] / overhead[OURS]
        print(f"ratio callback/ours: {ratio:.1f}x (target: at least {TARGET_RATIO:g}x)")
    return 0 if ratio >= TARGET_RATIO else 1


def workers_main() -> int:
    """1 vs 2 local workers on the demo config (bench/_parallel_tuning.py)."""
    from _parallel_tuning import workers_main as run

    return run()


def main() -> int:
    """Both parts (what `make bench` runs); non-zero when either misses its target."""
    first = recorder_main()
    return max(first, workers_main())


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    raise SystemExit(workers_main() if "--workers-only" in sys.argv else main())
