"""`study.workers: N` locally: this process and N-1 worker processes on one journal (or PostgreSQL) study, the
exact trial count, one parent run with every trial nested, one registration, a worker killed mid-trial whose
trial is failed and re-run, and a worker arriving after the last trial stood down."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
import yaml
from mlflow import MlflowClient

from modelloop.training import run_training
from modelloop.training.config import load_config
from modelloop.training.study import worker_id
from modelloop.training.trial_runs import METRIC_TRIALS_DONE, TAG_TRIAL_NUMBER, TAG_TRIAL_STATE, WORKER_ATTR
from modelloop.training.workers import RETRY_OF_ATTR, WorkerPool

N_TRIALS = 8


def write_config(path: Path, name: str, **study: object) -> Path:
    data = {
        "model_name": name,
        "dataset": {"name": "sklearn:breast_cancer"},
        "split": {"kind": "stratified"},
        "estimator": {"family": "logistic_regression"},
        "metric": {"name": "roc_auc"},
        "study": {"n_trials": N_TRIALS, **study},
        "promotion": {"policy": "auto"},
    }
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def nested_runs(client: MlflowClient, parent: str) -> list[object]:
    experiment = client.get_run(parent).info.experiment_id
    return list(
        client.search_runs(
            [experiment], filter_string=f"tags.mlflow.parentRunId = '{parent}'", max_results=1000
        )
    )


def check_one_training(client: MlflowClient, model_name: str, run_id: str) -> list[object]:
    """One registered version from the parent run, FINISHED, trials nested, the progress metric stepped."""
    versions = client.search_model_versions(f"name = '{model_name}'")
    assert [(v.version, v.run_id) for v in versions] == [("1", run_id)]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    history = client.get_metric_history(run_id, METRIC_TRIALS_DONE)
    # one point per finished trial, valued the study's count when it finished (workers finishing together
    # may see the same count), the last at the total
    assert len(history) == N_TRIALS and max(m.value for m in history) == N_TRIALS
    assert float(run.data.metrics["trials.complete"]) + float(run.data.metrics["trials.pruned"]) == N_TRIALS
    experiments = {r.info.experiment_id for r in client.search_runs([run.info.experiment_id])}
    assert experiments == {run.info.experiment_id}
    return nested_runs(client, run_id)


def test_two_local_workers_through_the_cli(tracking_uri: str, model_name: str, tmp_path: Path) -> None:
    config = write_config(tmp_path / "train.yaml", model_name)
    argv = [
        sys.executable,
        "-m",
        "modelloop",
        "train",
        "--config",
        str(config),
        "--tracking-uri",
        tracking_uri,
    ]
    done = subprocess.run(
        [*argv, "--workers", "2"],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = dict(line.split(": ", 1) for line in done.stdout.splitlines())
    assert lines["model"] == f"{model_name} version 1"
    # one progress line per trial, whichever worker ran it
    trial_lines = [ln for ln in done.stderr.splitlines() if ln.startswith("trial ")]
    assert len(trial_lines) == N_TRIALS, done.stderr
    assert all(f"/{N_TRIALS} " in ln for ln in trial_lines)

    client = MlflowClient(tracking_uri)
    nested = check_one_training(client, model_name, lines["run_id"])
    numbers = Counter(r.data.tags[TAG_TRIAL_NUMBER] for r in nested)  # type: ignore[attr-defined]
    assert len(numbers) == N_TRIALS and set(numbers.values()) == {1}  # each trial once, none lost

    # the same training again opens a new study only if asked: the CLI's temporary journal is gone, so it
    # trains again (a new parent run and version 2); resumption is the storage's job (next test)


def test_a_rerun_on_a_shared_storage_registers_nothing_more(
    tracking_uri: str, model_name: str, tmp_path: Path
) -> None:
    storage = f"journal:///{tmp_path / 'study.log'}"
    config = load_config(write_config(tmp_path / "train.yaml", model_name, storage=storage, workers=2))
    first = run_training(config, tracking_uri=tracking_uri)
    assert first.version == "1"
    again = run_training(config, tracking_uri=tracking_uri)
    assert (again.run_id, again.version, again.trials_run) == (first.run_id, "1", 0)
    client = MlflowClient(tracking_uri)
    nested = check_one_training(client, model_name, first.run_id)
    assert len(nested) == N_TRIALS
    study = optuna.load_study(study_name=model_name, storage=config_storage(storage))
    finished = study.get_trials(states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED))
    assert len(finished) == N_TRIALS


def config_storage(url: str) -> optuna.storages.BaseStorage:
    from modelloop.training.study import open_storage

    storage = open_storage(url)
    assert storage is not None
    return storage


_KILLED_MID_TRIAL = """
import os, signal, socket, sys, yaml
from modelloop.training.study import open_storage
from modelloop.training.trial_runs import WORKER_ATTR
config = yaml.safe_load(open(sys.argv[1]))
import optuna
study = optuna.load_study(study_name=config["model_name"], storage=open_storage(config["study"]["storage"]))
trial = study.ask()
trial.suggest_float("C", 1e-3, 100.0, log=True)  # as the real search space draws it
trial.set_user_attr(WORKER_ATTR, f"{socket.gethostname()}:{os.getpid()}")
os.kill(os.getpid(), signal.SIGKILL)  # dies in the middle of its trial
"""


def test_a_worker_killed_mid_trial(
    tracking_uri: str, model_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_argv = WorkerPool.argv
    started: list[int] = []

    def argv(pool: WorkerPool) -> list[str]:
        started.append(1)
        if len(started) == 1:  # the first worker started is killed in its first trial
            return [sys.executable, "-c", _KILLED_MID_TRIAL, str(pool.config_path)]
        return real_argv(pool)

    real_run = WorkerPool.run

    def run(pool: WorkerPool, n_trials: int | None, tune_here: Callable[[], object] | None = None) -> None:
        def tune_after_the_death() -> object:
            # this process would tune every (short) trial before the worker had imported anything: it
            # tunes once the killed worker's trial is failed (and enqueued again) by the pool
            wait_for(lambda: any(t.state == optuna.trial.TrialState.FAIL for t in pool.study.get_trials()))
            assert tune_here is not None
            return tune_here()

        real_run(pool, n_trials, tune_after_the_death)

    monkeypatch.setattr(WorkerPool, "argv", argv)
    monkeypatch.setattr(WorkerPool, "run", run)
    storage = f"journal:///{tmp_path / 'study.log'}"
    config = load_config(write_config(tmp_path / "train.yaml", model_name, storage=storage, workers=2))
    result = run_training(config, tracking_uri=tracking_uri)
    assert result.version == "1"
    # this process tunes as one of the two workers: one worker process, and one replacement for the
    # killed one (started while the study was not full: the killed trial held its slot)
    assert len(started) == 2

    study = optuna.load_study(study_name=model_name, storage=config_storage(storage))
    trials = study.get_trials()
    failed = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    assert len(failed) == 1 and "died" in failed[0].user_attrs["error"]
    retried = [t for t in trials if t.user_attrs.get(RETRY_OF_ATTR) == failed[0].number]
    assert len(retried) == 1 and retried[0].state.is_finished()
    assert retried[0].params == failed[0].params  # re-run with the same params
    done = [
        t for t in trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    ]
    assert len(done) == N_TRIALS
    assert not [t for t in trials if not t.state.is_finished()]

    client = MlflowClient(tracking_uri)
    nested = check_one_training(client, model_name, result.run_id)
    states = Counter(r.data.tags[TAG_TRIAL_STATE] for r in nested)  # type: ignore[attr-defined]
    assert states["FAIL"] == 1  # the killed trial is recorded (by the coordinator) as failed
    assert len(nested) == len(trials)


def wait_for(condition: Callable[[], bool], *, limit: float = 300.0) -> None:
    """Poll `condition` until it holds (an error after `limit` seconds: a hang is a failure, not a skip)."""
    stop = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < stop, "condition never held"
        time.sleep(0.05)


def test_a_worker_arriving_after_the_last_trial_is_stood_down(
    tracking_uri: str, model_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker process still starting when this process has tuned every trial holds no trial: the pool
    kills it instead of waiting for it to find the study full (the finishing step waited for its start-up)."""
    pools: list[WorkerPool] = []
    real_run = WorkerPool.run

    def run(pool: WorkerPool, n_trials: int | None, tune_here: Callable[[], object] | None = None) -> None:
        pools.append(pool)
        real_run(pool, n_trials, tune_here)

    # a worker that never gets as far as the study (still importing, for the pool's purposes)
    monkeypatch.setattr(
        WorkerPool, "argv", lambda pool: [sys.executable, "-c", "import time; time.sleep(900)"]
    )
    monkeypatch.setattr(WorkerPool, "run", run)
    storage = f"journal:///{tmp_path / 'study.log'}"
    config = load_config(write_config(tmp_path / "train.yaml", model_name, storage=storage, workers=2))
    result = run_training(config, tracking_uri=tracking_uri)
    assert result.version == "1"
    [pool] = pools
    assert pool.stood_down == 1 and not pool.pids
    study = optuna.load_study(study_name=model_name, storage=config_storage(storage))
    trials = study.get_trials()
    assert {t.user_attrs[WORKER_ATTR] for t in trials} == {worker_id()}  # every trial tuned here
    assert len(trials) == N_TRIALS
    nested = check_one_training(MlflowClient(tracking_uri), model_name, result.run_id)
    assert len(nested) == N_TRIALS


def test_tuning_job_pods_on_postgresql_finish_once(
    tracking_uri: str, model_name: str, fresh_postgres_url: str, tmp_path: Path
) -> None:
    """The tuning Job's pods as local processes: each `--tune-and-finish` on one PostgreSQL study; one
    finishes while the other waits for it and finds the version, and a re-run of the same retraining (a
    retried pod) registers nothing."""
    config = write_config(tmp_path / "train.yaml", model_name, storage=fresh_postgres_url, workers=2)
    argv = [sys.executable, "-m", "modelloop", "train", "--config", str(config), "--tracking-uri"]
    argv += [tracking_uri, "--tune-and-finish", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    pods = [subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    outputs = [p.communicate(timeout=600) for p in pods]
    for pod, (_, err) in zip(pods, outputs, strict=True):
        assert pod.returncode == 0, err.decode()
    registered = [out for out, _ in outputs if b"model: " in out and b"registered before" not in out]
    assert len(registered) == 1  # exactly one pod ran the finishing step; the other found its version
    run_id = dict(ln.split(": ", 1) for ln in registered[0].decode().splitlines())["run_id"]
    client = MlflowClient(tracking_uri)
    nested = check_one_training(client, model_name, run_id)
    assert len(nested) == N_TRIALS
    again = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert again.returncode == 0, again.stderr
    assert "registered before; nothing to do" in again.stdout
    assert len(client.search_model_versions(f"name = '{model_name}'")) == 1
