"""The local worker pool around this process's own tuning: a failing coordinator leaves no worker process
behind, and a worker that holds a trial is never stood down (it still has trial runs to write)."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest

from modelloop.training.trial_runs import WORKER_ATTR
from modelloop.training.workers import WorkerPool

SLEEPER = [sys.executable, "-c", "import time; time.sleep(900)"]


class SleepingPool(WorkerPool):
    """Worker processes that never reach the study (a process still importing, for the pool)."""

    def argv(self) -> list[str]:
        return SLEEPER


def journal_study(tmp_path: Path) -> tuple[optuna.Study, str]:
    from modelloop.training.study import open_storage

    url = f"journal:///{tmp_path / 'study.log'}"
    return optuna.create_study(storage=open_storage(url)), url


def test_a_failing_coordinator_leaves_no_worker_behind(tmp_path: Path) -> None:
    study, url = journal_study(tmp_path)
    pool = SleepingPool(study, tmp_path / "worker.yaml", "http://127.0.0.1:1", 3, storage_url=url)
    started: list[subprocess.Popen[bytes]] = []

    def tune_here() -> None:
        started.extend(pool._procs)
        raise KeyboardInterrupt  # SIGTERM or Ctrl-C while this process tunes

    with pytest.raises(KeyboardInterrupt):
        pool.run(4, tune_here)
    assert len(started) == 2  # three workers: this process and two processes
    assert all(proc.returncode is not None for proc in started)


def test_only_workers_holding_no_trial_are_stood_down(tmp_path: Path) -> None:
    study, url = journal_study(tmp_path)
    pool = SleepingPool(study, tmp_path / "worker.yaml", "http://127.0.0.1:1", 3, storage_url=url)
    procs: list[subprocess.Popen[bytes]] = []

    def tune_here() -> None:
        procs.extend(pool._procs)
        # the study's one trial, as if the first worker process had run it: that worker still has its
        # trial run to write, so the pool waits for it
        owner = f"{socket.gethostname()}:{procs[0].pid}"

        def objective(trial: optuna.Trial) -> float:
            trial.set_user_attr(WORKER_ATTR, owner)
            return trial.suggest_float("x", 0.0, 1.0)

        study.optimize(objective, n_trials=1)

    def end_the_busy_worker() -> None:  # once the pool has stood down the idle one
        stop = time.monotonic() + 300
        while pool.stood_down == 0 and time.monotonic() < stop:
            time.sleep(0.05)
        procs[0].terminate()

    ender = threading.Thread(target=end_the_busy_worker)
    ender.start()
    pool.run(1, tune_here)
    ender.join()
    assert pool.stood_down == 1
    assert procs[1].returncode == -signal.SIGKILL  # stood down by the pool
    assert procs[0].returncode == -signal.SIGTERM  # waited for until the test ended it
