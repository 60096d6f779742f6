"""The finishing step of a training: after the trials, by exactly one process per study.

Called by `training.run` once the study is full (or, for a single process, after its trials):
`claim_finish` takes the study's finishing lock and says whether a version was already registered (a re-run,
a retried pod, another pod of the tuning Job); `evaluate_best` refits the best trial's model and scores it,
the baseline and production on the test rows, then gates it; `record_and_register` logs the outcome on the
parent run and registers the version with the gate's verdict, marking the study registered before the run
ends; `summary` is the table `modelloop train` prints.
"""

from __future__ import annotations

import logging
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass

import mlflow
import optuna
from mlflow import MlflowClient

from modelloop.adapters.mlflow_registry import MlflowModelRegistry
from modelloop.training import budget, records, version_record
from modelloop.training.baselines import describe as describe_baseline
from modelloop.training.config import TrainingConfig
from modelloop.training.fitting import fit_final
from modelloop.training.gate import GateResult, decide, score_production
from modelloop.training.inputs import Inputs
from modelloop.training.metrics import evaluate
from modelloop.training.progress import summary_table
from modelloop.training.registration import choose_alias, existing_version, register
from modelloop.training.serialization import version_tags
from modelloop.training.study import FINISH_ATTR, REGISTERED_ATTR, best_trial, finisher_id

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Evaluated:
    """The refit model, its and the baseline's test metrics, the gate's verdict and the alias it earns."""

    best: optuna.trial.FrozenTrial
    outcome: records.Outcome
    gate: GateResult
    alias: str | None


def claim_finish(
    client: MlflowClient, config: TrainingConfig, study: optuna.Study, run_id: str, finishing: ExitStack
) -> str | None:
    """Take the study's finishing lock, held by `finishing` until the training ends, then return the version
    this training (its parent run) registered before, if any; None: this process finishes.

    The lock is a PostgreSQL advisory lock (pods of the tuning Job) or a file lock (local workers), so the
    database or the operating system releases it when its holder dies, however it dies, and the next waiting
    or retried worker takes over. Whoever holds it finishes; every other worker that sees the study full waits
    for it, then finds the version (`registration.existing_version`) and registers nothing: the other indexes
    of a tuning Job, two pods of one index (Kubernetes may run both at once), a pod retried after registering.
    (A claim by host name and index let two pods of one index both finish: two versions.)"""
    lock = budget.ClaimLock(config.study.storage, f"{study.study_name}/finish")
    finishing.callback(lock.close)
    log.info("finishing study %s, or waiting for the worker finishing it", study.study_name)
    finishing.enter_context(lock.held())
    registered = existing_version(client, config.model_name, run_id)
    if registered is None:
        study.set_user_attr(FINISH_ATTR, finisher_id())  # who finished, for the record
        return None
    # a finisher that died after registering left the study unmarked and the run open: complete both
    if study.user_attrs.get(REGISTERED_ATTR) != registered:
        study.set_user_attr(REGISTERED_ATTR, registered)
    if client.get_run(run_id).info.status != "FINISHED":
        client.set_terminated(run_id, "FINISHED")
    return registered


def evaluate_best(
    config: TrainingConfig, study: optuna.Study, inputs: Inputs, *, tracking_uri: str, unlogged: int
) -> Evaluated:
    """Refit the best trial's pipeline, score it, the baseline and production on the test set, and gate it."""
    data = inputs.data
    best = best_trial(study)
    model = fit_final(config, best.params, data)  # a family, a class or the objective's own model
    metric = config.metric.name
    model_metrics = evaluate(model, data.x_test, data.y_test, config.task, required=metric)
    baseline_metrics = evaluate(inputs.baseline, data.x_test, data.y_test, config.task, required=metric)
    production = score_production(
        MlflowModelRegistry(tracking_uri),
        config.model_name,
        data.x_test,
        data.y_test,
        task=config.task,
        metric=metric,
    )
    gate = decide(
        config.promotion,
        metric=metric,
        direction=config.direction,
        model=model_metrics,
        baseline=baseline_metrics,
        production=production,
    )
    counts = Counter(t.state.name for t in study.get_trials(deepcopy=False))
    outcome = records.Outcome(
        model=model,
        best_params=dict(best.params),
        best_value=float(best.value or 0.0),
        model_metrics=model_metrics,
        baseline_metrics=baseline_metrics,
        production=production,
        trial_counts={k: counts.get(k, 0) for k in ("COMPLETE", "PRUNED", "FAIL")},
        unlogged_trials=unlogged,
    )
    alias = choose_alias(
        policy=config.promotion.policy,
        configured=config.promotion.alias,
        passed=gate.passed,
        has_production=production is not None,
    )
    return Evaluated(best, outcome, gate, alias)


def record_and_register(
    client: MlflowClient,
    config: TrainingConfig,
    study: optuna.Study,
    run_id: str,
    *,
    inputs: Inputs,
    evaluated: Evaluated,
    tracking_uri: str,
    triggered_by: str | None,
    retrain: dict[str, str],
) -> str:
    """Log the outcome on the parent run, then register the version with the gate's verdict (and, for a
    retraining, the retraining tags: `training.version_record`)."""
    with records.fluent_tracking_uri(tracking_uri):
        # the fluent API keeps a process-wide active experiment: point it at this run's so a caller's
        # earlier set_experiment() cannot refuse the resumption
        mlflow.set_experiment(experiment_id=client.get_run(run_id).info.experiment_id)
        with mlflow.start_run(run_id=run_id):
            info = records.log_outcome(
                client,
                run_id,
                config,
                evaluated.outcome,
                study=study,
                loaded=inputs.loaded,
                data=inputs.data,
                triggered_by=triggered_by,
            )
            version = register(
                client,
                config.model_name,
                model_uri=info.model_uri,
                model_id=getattr(info, "model_id", None),
                run_id=run_id,
                tags={
                    **version_record.registration_tags(evaluated.gate, run_id, retrain=retrain),
                    **version_tags(config, evaluated.outcome.model),
                },
                alias=evaluated.alias,
            )
            # marked before the run ends: a worker starting now sees the run open (and waits for the
            # finishing lock, then finds the version) or the study registered, never a finished run to
            # replace with a new one that would register again
            study.set_user_attr(REGISTERED_ATTR, version)
            return version


def summary(config: TrainingConfig, *, ran: int, evaluated: Evaluated, version: str) -> str:
    """The table `modelloop train` prints at the end: trials, the best, test metrics, gate, registration."""
    gate, outcome = evaluated.gate, evaluated.outcome
    production = None
    if gate.production is not None and gate.production.metrics is not None:
        production = (gate.production.version, gate.production.metrics)
    registered = f"registered   {config.model_name} version {version}"
    registered += f", alias {evaluated.alias}" if evaluated.alias else " (no alias moved)"
    return summary_table(
        metric=config.metric.name,
        counts=outcome.trial_counts,
        ran_here=ran,
        best_number=evaluated.best.number,
        best_value=outcome.best_value,
        best_params=outcome.best_params,
        model_metrics=outcome.model_metrics,
        baseline_metrics=outcome.baseline_metrics,
        baseline_name=describe_baseline(config.baseline, config.task),
        production=production,
        gate_lines=[f"gate         {'passed' if gate.passed else 'failed'}: " + "; ".join(gate.reasons)],
        registered=registered,
    )


__all__ = ["Evaluated", "claim_finish", "evaluate_best", "record_and_register", "summary"]
