"""The shared trial budget: exactly `n_trials` finished trials however many threads or processes tune, and a
slot freed by a failed trial is claimed again."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from modelloop.training.budget import ClaimLock, counts, run_within_budget, storage_file
from modelloop.training.config import validate_config
from modelloop.training.study import open_storage, tune


def config(n_trials: int, n_jobs: int, storage: str | None = None) -> object:
    return validate_config(
        {
            "model_name": "m",
            "dataset": {"name": "sklearn:breast_cancer"},
            "estimator": {"family": "logistic_regression"},
            "metric": {"name": "roc_auc"},
            "study": {"n_trials": n_trials, "n_jobs": n_jobs, "storage": storage, "pruner": "none"},
        }
    )


def objective(trial: optuna.Trial) -> float:
    return trial.suggest_float("x", 0.0, 1.0)


@pytest.mark.parametrize("n_jobs", [1, 4])
def test_threads_fill_the_study_exactly(n_jobs: int, tmp_path: Path) -> None:
    url = f"journal:///{tmp_path / 'study.log'}"
    study = optuna.create_study(storage=open_storage(url), study_name="m")
    ran = tune(study, objective, config(9, n_jobs, url), [])  # type: ignore[arg-type]
    assert ran == 9 and counts(study) == (9, 0)
    assert tune(study, objective, config(9, n_jobs, url), []) == 0  # type: ignore[arg-type]


def test_a_failed_trial_frees_its_slot() -> None:
    study = optuna.create_study()
    calls: list[int] = []

    def flaky(trial: optuna.Trial) -> float:
        calls.append(trial.number)
        if trial.number == 1:
            raise ValueError("bad luck")
        return 1.0

    def one(claimed: object) -> None:
        study.optimize(claimed, n_trials=1, catch=(ValueError,))  # type: ignore[arg-type]

    run_within_budget(study, flaky, lock=ClaimLock(None, "m"), n_trials=3, deadline=None, optimize=one)
    assert counts(study) == (2, 0)  # the per-call bound (n_trials started) stops a worker that keeps failing
    run_within_budget(study, flaky, lock=ClaimLock(None, "m"), n_trials=3, deadline=None, optimize=one)
    assert counts(study) == (3, 0)
    assert len(study.trials) == 4


def test_storage_file() -> None:
    assert storage_file("journal:////tmp/a.log") == Path("/tmp/a.log")
    assert storage_file("sqlite:////tmp/a.db") == Path("/tmp/a.db")
    assert storage_file("postgresql://x/y") is None and storage_file(None) is None
