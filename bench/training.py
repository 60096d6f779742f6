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

Second part (issue 18), parallel tuning: the demo config (`examples/demo.yaml` on the demo's breast-cancer
CSV) with 40 trials, trained by `run_training` with `study.workers` 1 and then 2 (local worker processes on a
journal file), against a real `mlflow server`. Prints the wall time of each whole training and their ratio
(target at least 1.7x on two cores), the tuning span (first trial start to last trial end) and its ratio, and
the bookkeeping per trial while several workers write at once: the median gap between one worker's trials
(Optuna's storage, the claim lock, the trial recorder and the progress callbacks: all but the objective).
`--workers-only` runs only this part.

Run: `make bench` or `python bench/run.py training` (a few minutes; the machine is shared, expect noise).
"""

from __future__ import annotations

import itertools
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


def main() -> int:
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


WORKER_TRIALS = 40
WORKERS_TARGET = 1.7


def _demo_config(folder: Path, workers: int) -> object:
    from modelloop.cli.demo_data import load_dataset
    from modelloop.training.config import load_config

    csv = folder / "demo.csv"
    if not csv.exists():
        load_dataset().to_csv(csv, index=False)
    examples = Path(__file__).resolve().parent.parent / "examples" / "demo.yaml"
    return load_config(
        examples,
        [
            f"dataset.path={csv}",
            f"study.n_trials={WORKER_TRIALS}",
            f"study.workers={workers}",
            f"model_name=bench-workers-{workers}",
            "promotion.policy=manual",
            "promotion.alias=null",
        ],
    )


def _trial_gaps(study_trials: list[optuna.trial.FrozenTrial]) -> list[float]:
    """Seconds between one worker's trial end and its next trial's start, over every worker."""
    from modelloop.training.trial_runs import WORKER_ATTR

    by_worker: dict[str, list[optuna.trial.FrozenTrial]] = {}
    for t in study_trials:
        if t.datetime_start and t.datetime_complete:
            by_worker.setdefault(str(t.user_attrs.get(WORKER_ATTR)), []).append(t)
    gaps = []
    for trials in by_worker.values():
        trials.sort(key=lambda t: t.datetime_start)  # type: ignore[arg-type,return-value]
        for prev, nxt in itertools.pairwise(trials):
            gaps.append((nxt.datetime_start - prev.datetime_complete).total_seconds())  # type: ignore[operator]
    return gaps


def _one_training(uri: str, folder: Path, workers: int) -> tuple[float, float, list[float]]:
    from modelloop.training import run_training
    from modelloop.training.study import open_storage

    storage = f"journal:///{folder / f'study-{workers}.log'}"
    config = _demo_config(folder, workers)
    config = config.model_copy(update={"study": config.study.model_copy(update={"storage": storage})})  # type: ignore[attr-defined]
    start = time.perf_counter()
    result = run_training(config, tracking_uri=uri)  # type: ignore[arg-type]
    wall = time.perf_counter() - start
    study = optuna.load_study(study_name=config.study_name, storage=open_storage(storage))  # type: ignore[attr-defined]
    trials = study.get_trials(deepcopy=False)
    done = [t for t in trials if t.state.is_finished()]
    nested = MlflowClient(uri).search_runs(
        [result.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{result.run_id}'", max_results=1000
    )
    if len(nested) != len(trials) or len(done) != WORKER_TRIALS:
        raise RuntimeError(f"{workers} workers: {len(done)} trials, {len(nested)} nested runs")
    span = (max(t.datetime_complete for t in done) - min(t.datetime_start for t in done)).total_seconds()  # type: ignore[type-var,operator]
    return wall, span, _trial_gaps(trials)


def workers_main() -> int:
    """1 vs 2 local workers on the demo config (see the module docstring)."""
    import os

    from modelloop.deploy.mlflow_server import MlflowServer

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="bench-workers-") as tmp:
        server = MlflowServer(Path(tmp) / "mlflow")
        server.start(timeout=120)
        try:
            results = {n: _one_training(server.url, Path(tmp), n) for n in (1, 2)}
        finally:
            server.stop()
    print(
        f"\ndemo config, {WORKER_TRIALS} trials, local workers on a journal file, mlflow server; "
        f"{os.cpu_count()} CPUs"
    )
    print(f"{'workers':<8} {'training s':>11} {'tuning span s':>14} {'ms between trials (median)':>27}")
    for n, (wall, span, gaps) in results.items():
        gap = statistics.median(gaps) * 1000 if gaps else float("nan")
        print(f"{n:<8} {wall:>11.2f} {span:>14.2f} {gap:>27.1f}")
    wall_ratio = results[1][0] / results[2][0]
    span_ratio = results[1][1] / results[2][1]
    print(
        f"wall time ratio 1/2 workers: {wall_ratio:.2f}x (target: at least {WORKERS_TARGET:g}x); "
        f"tuning span ratio: {span_ratio:.2f}x"
    )
    return 0 if wall_ratio >= WORKERS_TARGET else 1


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    if "--workers-only" in sys.argv:
        raise SystemExit(workers_main())
    first = main()
    raise SystemExit(max(first, workers_main()))
