"""Plots a training run carries as artifacts: the optimisation history and the parameter importances.

Called by `training.records` after tuning. Drawn with matplotlib's Agg backend (no display needed); each
function returns a figure, or None when the study cannot support the plot (too few completed trials, or
parameters that never varied), which the caller reports.
"""

from __future__ import annotations

import logging
import warnings

import matplotlib

matplotlib.use("Agg")

import numpy as np
import optuna
from matplotlib.figure import Figure

log = logging.getLogger(__name__)


def optimization_history(study: optuna.Study, *, metric: str) -> Figure | None:
    """Every completed trial's validation score, and the best so far."""
    trials = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not trials:
        return None
    trials = sorted(trials, key=lambda t: t.number)
    numbers = np.array([t.number for t in trials])
    values = np.array([float(t.value) for t in trials if t.value is not None])
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    best = np.maximum.accumulate(values) if maximize else np.minimum.accumulate(values)
    fig = Figure(figsize=(7, 4))
    ax = fig.add_subplot()
    ax.scatter(numbers, values, s=14, alpha=0.7, label="trial")
    ax.step(numbers, best, where="post", color="tab:red", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(f"validation {metric}")
    ax.set_title("Optimisation history")
    ax.legend(loc="best")
    fig.tight_layout()
    return fig


def param_importances(study: optuna.Study) -> Figure | None:
    """fANOVA importance of each searched parameter (None when it cannot be computed)."""
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(complete) < 2:
        return None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            importances = optuna.importance.get_param_importances(study)
        except (RuntimeError, ValueError) as exc:
            log.info("parameter importances not computed: %s", exc)
            return None
    if caught:  # e.g. every trial scored the same: importances would mean nothing
        log.info("parameter importances not plotted: %s", caught[0].message)
        return None
    if not importances:
        return None
    names = list(importances)[::-1]
    fig = Figure(figsize=(7, 0.5 * len(names) + 1.5))
    ax = fig.add_subplot()
    ax.barh(names, [importances[n] for n in names], color="tab:blue")
    ax.set_xlabel("importance (fANOVA)")
    ax.set_title("Hyperparameter importance")
    fig.tight_layout()
    return fig


__all__ = ["optimization_history", "param_importances"]
