"""Local parallel tuning: N worker processes on one study, watched by the process that finishes the training.

Called by `training.run` when `study.workers` > 1 outside a tune-only worker. The coordinator (the calling
process, which already created the study and the parent run) writes the resolved config with the shared
storage to a file, starts `workers` processes of `modelloop train --tune-only` on it, and while they run:

- reports every finished trial of every worker to the caller's progress, once each, in the order seen;
- when a worker exits with an error or is killed, fails its RUNNING trials (Optuna's journal storage has no
  heartbeat) and enqueues each again with the same params, so the budget frees up and the trial is re-run;
  a replacement worker is started while the study is not full (at most `workers` replacements in all).

It returns when every worker has exited; the caller then runs the finishing step once. Storage: the
configured one when given (PostgreSQL, SQLite), else a journal file in a temporary folder kept for the
coordinator's lifetime.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import optuna

from modelloop.contract.errors import UnavailableError
from modelloop.training.budget import counts
from modelloop.training.config import TrainingConfig, dump_config
from modelloop.training.trial_runs import ERROR_ATTR, WORKER_ATTR

log = logging.getLogger(__name__)

TrialHook = Callable[[optuna.Study, optuna.trial.FrozenTrial], None]
#: User attribute of a trial enqueued again after its worker died: the number of the trial it re-runs.
RETRY_OF_ATTR = "retry_of"
_WATCH_SECONDS = 0.2
_SEEN = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)


def journal_url(folder: Path, study_name: str) -> str:
    """A journal-file storage URL for a study, in `folder`."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in study_name)
    return f"journal:///{(folder / f'{safe}.optuna.log').resolve()}"


def worker_config(config: TrainingConfig, storage: str) -> TrainingConfig:
    """The config a worker process runs: the shared storage, one worker."""
    study = config.study.model_copy(update={"storage": storage, "workers": 1})
    return config.model_copy(update={"study": study})


@dataclass
class WorkerPool:
    """Runs and watches the worker processes of one study (see the module docstring)."""

    study: optuna.Study
    config_path: Path
    tracking_uri: str
    size: int
    on_trial: TrialHook | None = None
    on_failed: TrialHook | None = None
    _procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _seen: set[int] = field(default_factory=set)
    _replacements: int = 0
    _host: str = field(default_factory=socket.gethostname)

    def argv(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "modelloop",
            "train",
            "--config",
            str(self.config_path),
            "--tracking-uri",
            self.tracking_uri,
            "--tune-only",
            "--quiet",
        ]

    def _start(self) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        self._procs.append(subprocess.Popen(self.argv(), env=env, stdout=subprocess.DEVNULL))

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._procs]

    def run(self, n_trials: int | None) -> None:
        """Start the workers and watch them until every one has exited."""
        for _ in range(self.size):
            self._start()
        try:
            while self._procs:
                self._report()
                for proc in [p for p in self._procs if p.poll() is not None]:
                    self._procs.remove(proc)
                    if proc.returncode != 0:
                        self._worker_died(proc, n_trials)
                time.sleep(_WATCH_SECONDS)
        finally:
            for proc in self._procs:  # the coordinator itself is failing: leave no worker behind
                proc.kill()
                proc.wait()
        self._report()

    def _worker_died(self, proc: subprocess.Popen[bytes], n_trials: int | None) -> None:
        worker = f"{self._host}:{proc.pid}"
        log.warning("tuning worker %s exited with %s", worker, proc.returncode)
        failed = fail_trials_of(self.study, worker)
        for trial in failed:
            if self.on_failed is not None:
                self.on_failed(self.study, trial)
        finished, _ = counts(self.study)
        if n_trials is not None and finished >= n_trials:
            return
        if self._replacements >= self.size:
            if not self._procs:
                raise UnavailableError(
                    f"tuning workers kept failing ({self._replacements} replaced); the study holds "
                    f"{finished} finished trials"
                )
            return
        self._replacements += 1
        self._start()

    def _report(self) -> None:
        for trial in self.study.get_trials(deepcopy=False, states=_SEEN):
            if trial.number in self._seen:
                continue
            self._seen.add(trial.number)
            if self.on_trial is not None:
                self.on_trial(self.study, trial)


def fail_trials_of(study: optuna.Study, worker: str) -> list[optuna.trial.FrozenTrial]:
    """Fail the RUNNING trials a dead worker left and enqueue each again with its params; returns them."""
    storage = study._storage
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if trial.user_attrs.get(WORKER_ATTR) != worker:
            continue
        storage.set_trial_user_attr(trial._trial_id, ERROR_ATTR, f"worker {worker} died during the trial")
        if storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL):
            study.enqueue_trial(dict(trial.params), user_attrs={RETRY_OF_ATTR: trial.number})
            failed.append(storage.get_trial(trial._trial_id))
    return failed


def run_workers(
    study: optuna.Study,
    config: TrainingConfig,
    *,
    tracking_uri: str,
    on_trial: TrialHook | None = None,
    on_failed: TrialHook | None = None,
) -> None:
    """Tune `study` with `config.study.workers` processes (see the module docstring). The study must be in
    the storage named by `config.study.storage`."""
    assert config.study.storage is not None
    with tempfile.TemporaryDirectory(prefix="modelloop-workers-") as folder:
        path = Path(folder) / "worker.yaml"
        path.write_text(dump_config(worker_config(config, config.study.storage)), encoding="utf-8")
        pool = WorkerPool(
            study, path, tracking_uri, config.study.workers, on_trial=on_trial, on_failed=on_failed
        )
        pool.run(config.study.n_trials)


__all__ = ["RETRY_OF_ATTR", "WorkerPool", "fail_trials_of", "journal_url", "run_workers", "worker_config"]
