"""`run_training`: one training from config to registered version. Called by `modelloop train` (and by
whatever
the CLI wires as the retraining trigger).

Order matters for "bad input changes nothing": the tracking server is checked, the data is loaded, checked and
split, and the baseline is fit before any run is created; the model version is registered last, with the
gate's
verdict, and removed again if registration does not complete. A failure after the parent run exists marks that
run FAILED. With `tune_only=True` the process only adds trials to a shared study (a worker), leaving refit,
recording and registration to the process that runs the training without it.
"""

from __future__ import annotations

import logging
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import mlflow
import optuna
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from modelloop.contract.errors import ConfigError, InvalidInputError, ModelloopError, UnavailableError
from modelloop.contract.registry import (
    TAG_GATE,
    TAG_GATE_MARGIN,
    TAG_GATE_REASONS,
    TAG_TRAINING_RUN,
    TAG_TRIGGERED_BY,
)
from modelloop.training import records
from modelloop.training.baselines import describe as describe_baseline
from modelloop.training.baselines import fit_baseline
from modelloop.training.config import TrainingConfig
from modelloop.training.datasets import load_dataset, prepare
from modelloop.training.estimators import build_pipeline
from modelloop.training.gate import GateResult, decide, score_production
from modelloop.training.metrics import evaluate
from modelloop.training.progress import TuningProgress, summary_table
from modelloop.training.registration import choose_alias, register
from modelloop.training.splits import split
from modelloop.training.study import Objective, best_trial, open_storage, open_study, tune
from modelloop.training.trial_runs import TrialRecorder, make_sink

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingResult:
    """What a training produced. `version` is None for a tune-only worker."""

    run_id: str
    model_name: str
    version: str | None
    gate_passed: bool | None
    promoted_alias: str | None
    metrics: dict[str, float] = field(default_factory=dict)
    baseline_metrics: dict[str, float] = field(default_factory=dict)
    gate_reasons: list[str] = field(default_factory=list)
    trials_run: int = 0


def run_training(
    config: TrainingConfig,
    *,
    tracking_uri: str,
    triggered_by: str | None = None,
    progress: bool = True,
    tune_only: bool = False,
    config_source: str | None = None,
) -> TrainingResult:
    """Tune, record, gate and register one model as `config` says (see the module docstring)."""
    if tune_only and config.study.storage is None:
        raise ConfigError(
            "study.storage: a tune-only worker needs a shared storage (sqlite:/// or postgresql://); "
            "the trials of an in-memory study would be lost when it exits"
        )
    client = records.connect(tracking_uri)
    mlflow.set_tracking_uri(tracking_uri)
    loaded = load_dataset(config.dataset)
    prepared = prepare(
        loaded.frame,
        target=config.target,
        task=config.task,
        features=config.dataset.features,
        drop=config.dataset.drop,
        time_column=config.split.time_column,
    )
    data = split(prepared, config.split, seed=config.seed)
    baseline = fit_baseline(config.baseline, task=config.task, x=data.fit_x, y=data.fit_y, seed=config.seed)
    try:
        records.existing_experiment(client, config.experiment_name)  # a deleted one: refuse before any change
    except MlflowException as exc:
        raise _as_modelloop_error(exc) from None
    storage = open_storage(config.study.storage)
    study, created = open_study(config, storage)
    try:
        experiment = records.experiment_id(client, config.experiment_name)
        run_id, new_run = records.parent_run(
            client,
            study,
            created=created,
            shared=storage is not None,
            experiment=experiment,
            run_name=f"{config.model_name}-training",
        )
    except MlflowException as exc:
        raise _as_modelloop_error(exc) from None
    try:
        if new_run:
            records.log_start(
                client,
                run_id,
                config,
                baseline=describe_baseline(config.baseline, config.task),
                n_rows=len(prepared.x),
                n_features=prepared.x.shape[1],
                config_source=config_source,
            )
        if triggered_by:
            client.set_tag(run_id, TAG_TRIGGERED_BY, triggered_by)
        ran, unlogged = _tune(
            config,
            study,
            data,
            client_uri=tracking_uri,
            experiment=experiment,
            run_id=run_id,
            progress=progress,
        )
        if tune_only:
            log.info("tuned %d trials of study %s as a worker", ran, study.study_name)
            return TrainingResult(run_id, config.model_name, None, None, None, trials_run=ran)
        return _finish(
            client,
            config,
            study=study,
            data=data,
            loaded=loaded,
            baseline=baseline,
            run_id=run_id,
            ran=ran,
            unlogged=unlogged,
            triggered_by=triggered_by,
            progress=progress,
        )
    except MlflowException as exc:
        _mark_failed(client, run_id)
        raise _as_modelloop_error(exc) from None
    except BaseException:
        _mark_failed(client, run_id)
        raise


def _as_modelloop_error(exc: MlflowException) -> ModelloopError:
    """MLflow's refusals as input errors; anything else (server errors, retries exhausted) as unavailable."""
    text = str(exc.message).splitlines()[0][:300] if exc.message else type(exc).__name__
    if exc.error_code in {"INVALID_PARAMETER_VALUE", "RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST"}:
        return InvalidInputError(f"MLflow refused a request: {text}")
    return UnavailableError(f"MLflow failed a request: {text}")


def _tune(
    config: TrainingConfig,
    study: optuna.Study,
    data: Any,
    *,
    client_uri: str,
    experiment: str,
    run_id: str,
    progress: bool,
) -> tuple[int, int]:
    recorder = TrialRecorder(
        make_sink(client_uri, experiment_id=experiment, parent_run_id=run_id, metric=config.metric.name)
    )
    callbacks: list[Any] = [recorder]
    if progress:
        callbacks.append(TuningProgress(metric=config.metric.name, total=config.study.n_trials))
    try:
        ran = tune(study, Objective(config, data), config, callbacks)
    finally:
        stats = recorder.close()
    if stats.failed:
        log.warning(
            "%d trial runs could not be recorded in MLflow (%s)", stats.failed, "; ".join(stats.errors)
        )
    return ran, stats.failed


def _finish(
    client: MlflowClient,
    config: TrainingConfig,
    *,
    study: optuna.Study,
    data: Any,
    loaded: Any,
    baseline: Any,
    run_id: str,
    ran: int,
    unlogged: int,
    triggered_by: str | None,
    progress: bool,
) -> TrainingResult:
    best = best_trial(study)
    est = config.estimator
    model = build_pipeline(est.family, {**est.params, **best.params}, columns=data.fit_x, seed=config.seed)
    model.fit(data.fit_x, data.fit_y)
    metric = config.metric.name
    model_metrics = evaluate(model, data.x_test, data.y_test, config.task, required=metric)
    baseline_metrics = evaluate(baseline, data.x_test, data.y_test, config.task, required=metric)
    production = score_production(
        client, config.model_name, data.x_test, data.y_test, task=config.task, metric=metric
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
    # the fluent API keeps a process-wide active experiment: point it at this run's so a caller's
    # earlier set_experiment() cannot refuse the resumption
    mlflow.set_experiment(experiment_id=client.get_run(run_id).info.experiment_id)
    with mlflow.start_run(run_id=run_id):
        info = records.log_outcome(
            client, run_id, config, outcome, study=study, loaded=loaded, data=data, triggered_by=triggered_by
        )
        version = register(
            client,
            config.model_name,
            model_uri=info.model_uri,
            model_id=getattr(info, "model_id", None),
            run_id=run_id,
            tags=_gate_tags(gate, run_id),
            alias=alias,
        )
    result = TrainingResult(
        run_id=run_id,
        model_name=config.model_name,
        version=version,
        gate_passed=gate.passed,
        promoted_alias=alias,
        metrics=model_metrics,
        baseline_metrics=baseline_metrics,
        gate_reasons=gate.reasons,
        trials_run=ran,
    )
    if progress:
        print(
            _summary(config, best=best, ran=ran, outcome=outcome, gate=gate, result=result),
            file=sys.stderr,
            flush=True,
        )
    return result


def _gate_tags(gate: GateResult, run_id: str) -> dict[str, str]:
    return {
        TAG_GATE: "passed" if gate.passed else "failed",
        TAG_GATE_REASONS: "; ".join(gate.reasons),
        TAG_GATE_MARGIN: f"{gate.margin:.6g}",
        TAG_TRAINING_RUN: run_id,
    }


def _summary(
    config: TrainingConfig,
    *,
    best: optuna.trial.FrozenTrial,
    ran: int,
    outcome: records.Outcome,
    gate: GateResult,
    result: TrainingResult,
) -> str:
    production = None
    if gate.production is not None and gate.production.metrics is not None:
        production = (gate.production.version, gate.production.metrics)
    registered = f"registered   {result.model_name} version {result.version}"
    registered += f", alias {result.promoted_alias}" if result.promoted_alias else " (no alias moved)"
    return summary_table(
        metric=config.metric.name,
        counts=outcome.trial_counts,
        ran_here=ran,
        best_number=best.number,
        best_value=outcome.best_value,
        best_params=outcome.best_params,
        model_metrics=outcome.model_metrics,
        baseline_metrics=outcome.baseline_metrics,
        baseline_name=describe_baseline(config.baseline, config.task),
        production=production,
        gate_lines=[f"gate         {'passed' if gate.passed else 'failed'}: " + "; ".join(gate.reasons)],
        registered=registered,
    )


def _mark_failed(client: MlflowClient, run_id: str) -> None:
    try:
        if client.get_run(run_id).info.status == "RUNNING":
            client.set_terminated(run_id, "FAILED")
    except Exception:  # the original error matters more than this one
        log.warning("could not mark training run %s as failed", run_id)


__all__ = ["TrainingResult", "run_training"]
