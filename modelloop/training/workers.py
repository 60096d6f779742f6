"""Local parallel tuning: N workers on one study, one of them the process that finishes the training.

Called by `training.run` when `study.workers` > 1 outside a tune-only worker. The coordinator (the calling
process, which already created the study and the parent run, imported everything and loaded the data) writes
the resolved config with the shared storage to a file, starts `workers - 1` processes of
`modelloop train --tune-only` on it and tunes the study itself as the N-th worker (`tune_here`) while a
watcher thread looks after the others:

- reports every finished trial of the other workers to the caller's progress, once each, in the order seen
  (the coordinator's own trials reach it through its own Optuna callbacks);
- when a worker exits with an error or is killed, fails its RUNNING trials (Optuna's journal storage has no
  heartbeat) and enqueues each again with the same params, so the budget frees up and the trial is re-run
  (by whichever worker claims the next slot); a replacement worker is started while the study is not full
  (at most `workers` replacements in all);
- once this process has tuned its share and the study holds its `n_trials` finished trials, stands down the
  workers that hold no trial (still starting: they could only find the study full and exit) by killing them,
  under the journal's own lock so none is cut off mid-write; workers that ran trials are waited for (they
  flush their trial runs to MLflow on exit).

Why the coordinator tunes too: a worker process pays Python's imports (sklearn, MLflow, Optuna: about 3 s of
CPU), the data load and the MLflow connection before its first trial; with every trial in child processes the
coordinator sat idle on one of the cores while each child paid that again, and the finishing step waited for
children that arrived after the last trial (bench/training.py). It returns when its own tuning is done and
every worker has exited or been stood down; the caller then runs the finishing step once.
Storage: the configured one when given (PostgreSQL, SQLite), else a journal file in a temporary folder kept
for the coordinator's lifetime.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import optuna

from modelloop.contract.errors import UnavailableError
from modelloop.training.budget import counts, storage_file
from modelloop.training.config import TrainingConfig, dump_config
from modelloop.training.study import worker_id
from modelloop.training.trial_runs import ERROR_ATTR, WORKER_ATTR

log = logging.getLogger(__name__)

TrialHook = Callable[[optuna.Study, optuna.trial.FrozenTrial], None]
#: User attribute of a trial enqueued again after its worker died: the number of the trial it re-runs.
RETRY_OF_ATTR = "retry_of"
#: Seconds between the watcher's looks at the worker processes and the study.
WATCH_SECONDS = 0.05
_FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
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
    storage_url: str | None = None  # the study's storage (a journal's lock guards the stand-down)
    _procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _seen: set[int] = field(default_factory=set)
    _replacements: int = 0
    _host: str = field(default_factory=socket.gethostname)
    _tuning_here: bool = False
    _stop: threading.Event = field(default_factory=threading.Event)
    _stand_down: threading.Event = field(default_factory=threading.Event)
    stood_down: int = 0

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

    def run(self, n_trials: int | None, tune_here: Callable[[], object] | None = None) -> None:
        """Start the workers (one fewer with `tune_here`, which then runs in this thread as the last one)
        and watch them until every one has exited."""
        self._tuning_here = tune_here is not None
        for _ in range(self.size - (1 if tune_here is not None else 0)):
            self._start()
        if tune_here is None:
            self._watch(n_trials)
            return
        failure: list[BaseException] = []

        def watch() -> None:
            try:
                self._watch(n_trials)
            except BaseException as exc:  # handed to the calling thread
                failure.append(exc)

        watcher = threading.Thread(target=watch, name="tuning-workers", daemon=True)
        watcher.start()
        try:
            tune_here()
            self._tuning_here = False  # from now on, workers failing with nobody tuning is an error
            self._stand_down.set()
        except BaseException:
            self._stop.set()  # the coordinator is failing: the watcher leaves no worker behind
            raise
        finally:
            watcher.join()
        if failure:
            raise failure[0]

    def _watch(self, n_trials: int | None) -> None:
        try:
            while self._procs and not self._stop.is_set():
                self._report()
                for proc in [p for p in self._procs if p.poll() is not None]:
                    self._procs.remove(proc)
                    if proc.returncode != 0:
                        self._worker_died(proc, n_trials)
                if self._stand_down.is_set() and n_trials is not None:
                    self._stand_down_idle(n_trials)
                if self._procs:
                    self._stop.wait(WATCH_SECONDS)
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
            if not self._procs and not self._tuning_here:
                raise UnavailableError(
                    f"tuning workers kept failing ({self._replacements} replaced); the study holds "
                    f"{finished} finished trials"
                )
            return
        self._replacements += 1
        self._start()

    def _stand_down_idle(self, n_trials: int) -> None:
        """Kill the workers holding no trial when the study is full (see the module docstring)."""
        trials = self.study.get_trials(deepcopy=False)
        finished = sum(1 for t in trials if t.state in _FINISHED)
        owners = {t.user_attrs.get(WORKER_ATTR) for t in trials}
        idle = [p for p in self._procs if f"{self._host}:{p.pid}" not in owners]
        if finished < n_trials or not idle:
            return
        with _journal_lock(self.storage_url):
            for proc in idle:
                self._procs.remove(proc)
                proc.kill()
                proc.wait()
                self.stood_down += 1
        log.info("stood down %d tuning workers that arrived after the last trial", len(idle))

    def _report(self) -> None:
        here = worker_id()
        for trial in self.study.get_trials(deepcopy=False, states=_SEEN):
            if trial.number in self._seen:
                continue
            self._seen.add(trial.number)
            if trial.user_attrs.get(WORKER_ATTR) == here:
                continue  # the coordinator's own trial: its callbacks reported it
            if self.on_trial is not None:
                self.on_trial(self.study, trial)


@contextmanager
def _journal_lock(storage_url: str | None) -> Iterator[None]:
    """The lock Optuna's journal file storage takes around every read and write (nothing for a database:
    it rolls back the transaction of a killed client)."""
    path = storage_file(storage_url) if storage_url and storage_url.startswith("journal:///") else None
    if path is None:
        yield
        return
    from optuna.storages.journal import JournalFileOpenLock

    lock = JournalFileOpenLock(str(path))
    lock.acquire()
    try:
        yield
    finally:
        lock.release()


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
    tune_here: Callable[[], object] | None = None,
) -> None:
    """Tune `study` with `config.study.workers` workers (see the module docstring): with `tune_here` (this
    process tuning the study), that many minus one worker processes beside it. The study must be in the
    storage named by `config.study.storage`."""
    assert config.study.storage is not None
    with tempfile.TemporaryDirectory(prefix="modelloop-workers-") as folder:
        path = Path(folder) / "worker.yaml"
        path.write_text(dump_config(worker_config(config, config.study.storage)), encoding="utf-8")
        pool = WorkerPool(
            study,
            path,
            tracking_uri,
            config.study.workers,
            on_trial=on_trial,
            on_failed=on_failed,
            storage_url=config.study.storage,
        )
        pool.run(config.study.n_trials, tune_here=tune_here)


__all__ = [
    "RETRY_OF_ATTR",
    "WATCH_SECONDS",
    "WorkerPool",
    "fail_trials_of",
    "journal_url",
    "run_workers",
    "worker_config",
]
