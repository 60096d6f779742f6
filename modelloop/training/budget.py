"""The trial budget shared by every worker of a study: exactly `n_trials` finished trials, no more.

Called by `training.study.tune`. Optuna's own `MaxTrialsCallback` stops a worker only after a trial
finishes, so N workers on one study overshoot by up to N-1 trials. Here a worker starts a trial only while
holding the study's claim lock and only when the finished plus running trials leave room; it releases the lock
as soon as Optuna has created the trial (the objective's first line). A worker that finds the budget taken by
running trials waits (polling) for them: if one of them fails (its worker died and the trial was failed by
the heartbeat or by `workers.fail_trials_of`), the freed slot is claimed again and the trial re-run (the
retry Optuna enqueued is picked up first).

The lock is an exclusive `flock` on a file beside a journal or SQLite storage (workers on one machine), a
PostgreSQL advisory lock keyed by the study name (pods on a cluster), or a thread lock for an in-memory
study. It is held for milliseconds per trial.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna

log = logging.getLogger(__name__)

_FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
#: Seconds between looks at the study while the budget is held by other workers' running trials.
POLL_SECONDS = 0.2


def storage_file(url: str | None) -> Path | None:
    """The file of a journal or SQLite storage URL (None for a server or an in-memory study)."""
    if url is None:
        return None
    for prefix in ("journal:///", "sqlite:///"):
        if url.startswith(prefix):
            return Path(url.removeprefix(prefix))
    return None


class ClaimLock:
    """A lock shared by every worker of one study (see the module docstring). Re-entrant across threads
    of one process through its thread lock; across processes through the file or advisory lock."""

    def __init__(self, storage_url: str | None, study_name: str) -> None:
        self._thread_lock = threading.Lock()
        self._path: Path | None = None
        self._engine: Any = None
        self._key = int.from_bytes(hashlib.sha256(study_name.encode()).digest()[:8], "big", signed=True)
        file = storage_file(storage_url)
        if file is not None:
            self._path = file.with_name(f"{file.name}.{self._key & 0xFFFFFFFF:08x}.claim")
        elif storage_url is not None and storage_url.startswith("postgresql"):
            import sqlalchemy as sa

            self._engine = sa.create_engine(storage_url, pool_size=1, pool_pre_ping=True)

    def close(self) -> None:
        """Release the database connection pool (the advisory lock's)."""
        if self._engine is not None:
            self._engine.dispose()

    @contextmanager
    def held(self) -> Iterator[Callable[[], None]]:
        """Hold the lock; yields a `release()` that may be called early (then the exit does nothing)."""
        self._thread_lock.acquire()
        undo = self._acquire_outer()
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                undo()
                self._thread_lock.release()

        try:
            yield release
        finally:
            release()

    def _acquire_outer(self) -> Callable[[], None]:
        if self._path is not None:
            handle = self._path.open("a")
            fcntl.flock(handle, fcntl.LOCK_EX)

            def unlock_file() -> None:
                fcntl.flock(handle, fcntl.LOCK_UN)
                handle.close()

            return unlock_file
        if self._engine is not None:
            import sqlalchemy as sa

            conn = self._engine.connect()
            conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": self._key})

            def unlock_pg() -> None:
                try:
                    conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": self._key})
                finally:
                    conn.close()

            return unlock_pg
        return lambda: None


def counts(study: optuna.Study) -> tuple[int, int]:
    """(finished, running) trials of the study."""
    finished = running = 0
    for trial in study.get_trials(deepcopy=False):
        if trial.state in _FINISHED:
            finished += 1
        elif trial.state == optuna.trial.TrialState.RUNNING:
            running += 1
    return finished, running


def _fail_stale(study: optuna.Study) -> None:
    from optuna.storages._heartbeat import is_heartbeat_enabled

    if is_heartbeat_enabled(study._storage):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)


def run_within_budget(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], float],
    *,
    lock: ClaimLock,
    n_trials: int,
    deadline: float | None,
    optimize: Callable[[Callable[[optuna.Trial], float]], None],
) -> None:
    """Start trials one at a time, each only while the budget has room, until the study holds `n_trials`
    finished ones, `deadline` (time.monotonic) passes, or this call has started `n_trials` trials (so
    trials that always fail cannot loop forever). `optimize(objective)` runs exactly one trial."""
    started = 0
    while (deadline is None or time.monotonic() < deadline) and started < n_trials:
        with lock.held() as release:
            _fail_stale(study)
            finished, running = counts(study)
            if finished >= n_trials:
                return
            room = finished + running < n_trials
            if room:

                def claimed(trial: optuna.Trial) -> float:
                    release()  # the trial exists (RUNNING): it holds its slot
                    return objective(trial)

                optimize(claimed)
                started += 1
                continue
        time.sleep(POLL_SECONDS)  # the budget is held by running trials: wait for them to finish or fail


__all__ = ["POLL_SECONDS", "ClaimLock", "counts", "run_within_budget", "storage_file"]
