"""The Optuna study: storage, sampler and pruner, the objective, and tuning until the study is full.

Called by `training.run`. A study lives in memory by default, in a journal file (several worker processes on
one machine), or in a SQL storage (SQLite, or PostgreSQL shared by worker pods): each `tune` call runs
trials until the study holds exactly `n_trials` finished ones (`training.budget`), so workers tune one study
together. The study is resumable: running the same config again continues it.

Trials fit on the training rows and are scored on the validation rows (a family, a class by import path, or
the model your objective function returns: `training.fitting`). Families with an incremental
parameter grow
it in stages (warm start) and report the validation score after each stage, so the median pruner stops poor
trials
early. A trial that fails (an invalid parameter combination, a metric undefined on the data) is recorded as
failed
with its reason; if none completes, the training stops with the first reason.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
import pandas as pd
import sqlalchemy as sa

from modelloop.contract.errors import ConfigError, InvalidInputError, UnavailableError
from modelloop.training import budget
from modelloop.training.config import TrainingConfig
from modelloop.training.estimators import FAMILIES, search_space
from modelloop.training.fitting import build_model, objective_trial
from modelloop.training.metrics import score
from modelloop.training.splits import Split
from modelloop.training.trial_runs import ERROR_ATTR, WORKER_ATTR

log = logging.getLogger(__name__)

#: Study user attribute holding the MLflow parent run every worker nests its trial runs under.
PARENT_RUN_ATTR = "mlflow_parent_run_id"
#: Study user attribute: the version the finishing step registered (a re-run registers nothing more).
REGISTERED_ATTR = "modelloop_registered_version"
#: Study user attribute: the worker (host name) that last ran the finishing step of a tuning Job, for
#: people reading the study; who finishes is decided by the per-study finishing lock, not by this.
FINISH_ATTR = "modelloop_finishing_worker"
#: Stages an incremental family is grown in (each reports an intermediate score).
STAGES = 4
_DONE = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
_TRIAL_ERRORS = (ValueError, ArithmeticError, InvalidInputError)


def worker_id() -> str:
    """This process, as recorded on the trials it runs."""
    return f"{socket.gethostname()}:{os.getpid()}"


def finisher_id() -> str:
    """Who ran a study's finishing step, for people reading the study (the finishing lock decides who
    finishes): a tuning Job's pod and index, else this process."""
    index = os.environ.get("JOB_COMPLETION_INDEX")
    return f"{socket.gethostname()}/{index}" if index is not None else worker_id()


def safe_url(url: str) -> str:
    """A storage URL without its password, for messages and params."""
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return url.rsplit("@", maxsplit=1)[-1]


def open_storage(url: str | None) -> optuna.storages.BaseStorage | None:
    """In-memory (None), a journal file (`journal:///path`: several processes on one machine) or a SQL
    storage; an unreachable database is an UnavailableError."""
    if url is None:
        return None
    if url.startswith("journal:///"):
        return _journal_storage(url.removeprefix("journal:///"))
    for attempt in (1, 2):
        try:
            return _rdb_storage(url)
        except (sa.exc.IntegrityError, sa.exc.ProgrammingError):
            # workers starting together on a fresh database race to create Optuna's tables: retry once
            if attempt == 2:
                raise UnavailableError(f"cannot set up the Optuna storage {safe_url(url)}") from None
            time.sleep(1.0)
    raise AssertionError("unreachable")


def _journal_storage(path: str) -> optuna.storages.BaseStorage:
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock, JournalStorage

    return JournalStorage(JournalFileBackend(path, lock_obj=JournalFileOpenLock(path)))


def _rdb_storage(url: str) -> optuna.storages.BaseStorage:
    try:
        with warnings.catch_warnings():
            # heartbeats (a crashed worker's trials are failed, not left running) are marked experimental
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                url,
                engine_kwargs={"pool_pre_ping": True},
                heartbeat_interval=30,
                grace_period=120,
                # a crashed worker's trial is failed, and re-run with the same params by the next worker
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3),
            )
    except sa.exc.OperationalError:
        raise UnavailableError(f"cannot reach the Optuna storage {safe_url(url)}") from None
    except (sa.exc.ArgumentError, ImportError, ValueError) as exc:
        raise ConfigError(f"study.storage: cannot use {safe_url(url)}: {type(exc).__name__}") from None


def open_study(
    config: TrainingConfig, storage: optuna.storages.BaseStorage | None
) -> tuple[optuna.Study, bool]:
    """Create the study, or load it when it exists (resume / another worker). Returns (study, created)."""
    seed = config.seed if storage is None else None  # workers sharing a study must not draw the same points
    sampler = optuna.samplers.TPESampler(seed=seed)
    pruner: optuna.pruners.BasePruner = (
        optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)
        if config.study.pruner == "median"
        else optuna.pruners.NopPruner()
    )
    name = config.study_name
    try:
        study = optuna.create_study(
            study_name=name, storage=storage, sampler=sampler, pruner=pruner, direction=config.direction
        )
        return study, True
    except optuna.exceptions.DuplicatedStudyError:
        pass
    except sa.exc.OperationalError:
        raise UnavailableError("cannot reach the Optuna storage") from None
    assert storage is not None  # an in-memory study is always new
    study = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
    if study.direction.name.lower() != config.direction:
        raise ConfigError(
            f"study.name: the existing study {name!r} is to {study.direction.name.lower()}, "
            f"not {config.direction}"
        )
    return study, False


def finished_trials(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=_DONE))


def parent_run_of(study: optuna.Study, *, deadline: float = 30.0) -> str | None:
    """The parent run recorded on the study, waiting briefly for the worker that created it."""
    stop = time.monotonic() + deadline
    while True:
        run_id = study.user_attrs.get(PARENT_RUN_ATTR)
        if run_id or time.monotonic() >= stop:
            return str(run_id) if run_id else None
        time.sleep(0.2)


def _suggest(trial: optuna.Trial, space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for name, dist in space.items():
        kind = dist["type"]
        if kind == "float":
            params[name] = trial.suggest_float(name, dist["low"], dist["high"], log=dist.get("log", False))
        elif kind == "int":
            params[name] = trial.suggest_int(name, dist["low"], dist["high"], log=dist.get("log", False))
        else:
            params[name] = trial.suggest_categorical(name, dist["choices"])
    return params


@dataclass(frozen=True)
class Objective:
    """Fits one trial's pipeline on the training rows and scores it on the validation rows."""

    config: TrainingConfig
    data: Split

    def __call__(self, trial: optuna.Trial) -> float:
        trial.set_user_attr(WORKER_ATTR, worker_id())
        est = self.config.estimator
        try:
            if est.objective is not None:
                model = objective_trial(self.config, trial, self.data)
                return score(model, self.data.x_val, self.data.y_val, self.config.metric.name)
            params = {
                **est.params,
                **_suggest(trial, search_space(est.family or "", est.search_space, fixed=est.params)),
            }
            return self._fit_and_score(trial, params)
        except _TRIAL_ERRORS as exc:
            trial.set_user_attr(
                ERROR_ATTR, f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
            )
            raise

    def _fit_and_score(self, trial: optuna.Trial, params: dict[str, Any]) -> float:
        cfg, d = self.config, self.data
        family = FAMILIES.get(cfg.estimator.family or "")
        incremental = family.incremental_param if family is not None else None
        pipe = build_model(cfg, params, columns=d.x_train)
        stages = self._stages(pipe, incremental)
        if not stages:
            pipe.fit(d.x_train, d.y_train)
            return score(pipe, d.x_val, d.y_val, cfg.metric.name)
        pipe.set_params(model__warm_start=True)
        value = math.nan
        for step, size in enumerate(stages):
            pipe.set_params(**{f"model__{incremental}": size})
            pipe.fit(d.x_train, d.y_train)
            value = score(pipe, d.x_val, d.y_val, cfg.metric.name)
            trial.report(value, step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return value

    def _stages(self, pipe: Any, param: str | None) -> list[int]:
        if param is None or self.config.study.pruner == "none":
            return []
        total = int(pipe.get_params()[f"model__{param}"])
        return sorted({max(1, math.ceil(total * k / STAGES)) for k in range(1, STAGES + 1)})


def tune(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], float],
    config: TrainingConfig,
    callbacks: Sequence[Callable[[optuna.Study, optuna.trial.FrozenTrial], None]],
) -> int:
    """Run trials until the study holds `n_trials` finished ones (or the timeout passes); returns how many
    trials this call ran. With a trial count, every worker of the study shares it exactly (`budget`)."""
    before = len(study.get_trials(deepcopy=False))
    n_trials = config.study.n_trials
    if n_trials is not None and finished_trials(study) >= n_trials:
        log.info("study %s already holds %d finished trials", study.study_name, n_trials)
        return 0
    options: dict[str, Any] = {
        "catch": _TRIAL_ERRORS,
        "callbacks": list(callbacks),
        "gc_after_trial": False,
        "show_progress_bar": False,
    }
    if n_trials is None:
        study.optimize(objective, timeout=config.study.timeout, n_jobs=config.study.n_jobs, **options)
        return len(study.get_trials(deepcopy=False)) - before
    timeout = config.study.timeout
    deadline = None if timeout is None else time.monotonic() + timeout
    lock = budget.ClaimLock(config.study.storage, study.study_name)

    def one_trial(claimed: Callable[[optuna.Trial], float]) -> None:
        study.optimize(claimed, n_trials=1, **options)

    def run() -> None:
        budget.run_within_budget(
            study, objective, lock=lock, n_trials=n_trials, deadline=deadline, optimize=one_trial
        )

    threads = [threading.Thread(target=run, name=f"tune-{i}") for i in range(config.study.n_jobs - 1)]
    try:
        for thread in threads:
            thread.start()
        run()
    finally:
        for thread in threads:
            thread.join()
        lock.close()
    return len(study.get_trials(deepcopy=False)) - before


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial:
    """The best completed trial; without one, an error naming the first failure."""
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if complete:
        return study.best_trial
    failed = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,))
    reason = next((str(t.user_attrs[ERROR_ATTR]) for t in failed if ERROR_ATTR in t.user_attrs), None)
    if reason:
        raise InvalidInputError(f"no trial completed; the first failed with {reason}")
    raise InvalidInputError("no trial completed (the time budget may be too short)")


def trial_frame(study: optuna.Study) -> pd.DataFrame:
    """Number, state, value and params of every trial (for plots and the summary)."""
    rows = [
        {"number": t.number, "state": t.state.name, "value": t.value, **t.params}
        for t in study.get_trials(deepcopy=False)
    ]
    return pd.DataFrame(rows)


__all__ = [
    "FINISH_ATTR",
    "PARENT_RUN_ATTR",
    "REGISTERED_ATTR",
    "STAGES",
    "Objective",
    "best_trial",
    "finished_trials",
    "finisher_id",
    "open_storage",
    "open_study",
    "parent_run_of",
    "safe_url",
    "trial_frame",
    "tune",
    "worker_id",
]
