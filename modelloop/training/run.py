"""`run_training`: one training from config to registered version. Called by `modelloop train` (and by
whatever the CLI wires as the retraining trigger).

Order matters for "bad input changes nothing": the tracking server is checked, the data is loaded, checked and
split, and the baseline is fit before any run is created; the model version is registered last, with the
gate's verdict, and removed again if registration does not complete. A failure after the parent run exists
marks that run FAILED. With `tune_only=True` the process only adds trials to a shared study (a worker),
leaving refit, recording and registration to the process that runs the training without it. With
`study.workers` > 1 this process tunes beside that many minus one local tune-only workers
(`training.workers`) and finishes once they exit; with `finish_if_first` (a pod of the tuning Job) a worker
that sees the study full takes the study's finishing lock and finishes unless the training's version exists
(`training.finishing`: the lock, the refit, the gate, the record and the registration). A full study whose
finishing step registered a version is not trained again, nor registered twice.

MLflow is reached through clients built from `tracking_uri`; the process-wide tracking URI is set only while
the outcome is logged on the parent run (MLflow's fluent logging, `mlflow.sklearn.log_model` among it, reads
nothing else) and restored afterwards. Nothing here prints: progress goes to the `TrainingProgress` the caller
passes (`modelloop train` passes one writing to stderr).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import optuna
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from modelloop.adapters import mlflow_errors
from modelloop.adapters.mlflow_registry import MlflowModelRegistry
from modelloop.contract.errors import ConfigError, InvalidInputError, ModelloopError, UnavailableError
from modelloop.contract.registry import TAG_TRIGGERED_BY
from modelloop.training import budget, records, version_record, workers
from modelloop.training import finishing as finishing_step
from modelloop.training.baselines import describe as describe_baseline
from modelloop.training.config import TrainingConfig
from modelloop.training.distill import Distilled, ServedLatency, distil
from modelloop.training.finishing import Evaluated
from modelloop.training.inputs import Inputs, load_inputs
from modelloop.training.interrupts import run_status_for, sigterm_interrupts
from modelloop.training.progress import TrainingProgress, quiet_optuna
from modelloop.training.splits import Split
from modelloop.training.study import (
    PARENT_RUN_ATTR,
    REGISTERED_ATTR,
    Objective,
    open_storage,
    open_study,
    tune,
)
from modelloop.training.trial_runs import ParentProgress, TrialRecorder, make_sink

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
    experiment_id: str | None = None  # the MLflow experiment of the parent run
    student: Distilled | None = None  # with `distill`: the student registered beside the version


@dataclass(frozen=True)
class _Parent:
    """The study and the parent run the training records into."""

    study: optuna.Study
    run_id: str
    created: bool  # the run was created by this process
    experiment: str
    registered: str | None = None  # the version a finished run of this study registered


def run_training(
    config: TrainingConfig,
    *,
    tracking_uri: str,
    triggered_by: str | None = None,
    progress: TrainingProgress | None = None,
    tune_only: bool = False,
    finish_if_first: bool = False,
    config_source: str | None = None,
    served_latency: ServedLatency | None = None,
) -> TrainingResult:
    """Tune, record, gate and register one model as `config` says (see the module docstring).

    `served_latency` (with `distill`) measures a registered version's single-row latency as the scoring
    server answers; `modelloop train` gives one built on serving's loader (`training.distill`).

    `progress` hears of every trial and of the outcome (None: nobody does). With `study.workers` > 1 (not
    as a tune-only worker) the trials run in that many workers, this process and worker processes
    (`training.workers`), and this process finishes. With `finish_if_first`, a tune-only worker (a pod of
    the tuning Job) that sees the study full finishes under the study's finishing lock, or finds the version
    its holder registered (`training.finishing.claim_finish`).
    """
    if (tune_only or finish_if_first) and config.study.storage is None:
        raise ConfigError(
            "study.storage: a tune-only worker needs a shared storage (journal:///, sqlite:/// or "
            "postgresql://); the trials of an in-memory study would be lost when it exits"
        )
    with sigterm_interrupts(), _worker_storage(config, tune_only=tune_only or finish_if_first) as resolved:
        return _run(
            resolved,
            tracking_uri=tracking_uri,
            triggered_by=triggered_by,
            progress=progress,
            tune_only=tune_only and not finish_if_first,
            finish_if_first=finish_if_first,
            config_source=config_source,
            served_latency=served_latency,
        )


@contextmanager
def _worker_storage(config: TrainingConfig, *, tune_only: bool) -> Iterator[TrainingConfig]:
    """The config to run: with several local workers and no storage, a journal file made for this training
    (kept until it ends); otherwise `config` as it is."""
    if tune_only or config.study.workers == 1 or config.study.storage is not None:
        yield config
        return
    with tempfile.TemporaryDirectory(prefix="modelloop-study-") as folder:
        url = workers.journal_url(Path(folder), config.study_name)
        yield config.model_copy(update={"study": config.study.model_copy(update={"storage": url})})


def _run(
    config: TrainingConfig,
    *,
    tracking_uri: str,
    triggered_by: str | None,
    progress: TrainingProgress | None,
    tune_only: bool,
    finish_if_first: bool,
    config_source: str | None,
    served_latency: ServedLatency | None,
) -> TrainingResult:
    client = records.connect(tracking_uri)
    inputs = load_inputs(config)
    parent = _open_parent(client, config)
    if parent.registered is not None:
        return _already_registered(config, parent)
    finishing = ExitStack()  # holds the study's finishing lock from the claim to the end
    try:
        if parent.created:
            _log_start(client, parent.run_id, config, inputs, config_source=config_source)
        if triggered_by:
            client.set_tag(parent.run_id, TAG_TRIGGERED_BY, triggered_by)
        coordinate = config.study.workers > 1 and not (tune_only or finish_if_first)
        ran, unlogged = _tune(
            config, parent, inputs.data, tracking_uri=tracking_uri, progress=progress, coordinate=coordinate
        )
        if tune_only or (finish_if_first and not _study_full(config, parent.study)):
            log.info("tuned %d trials of study %s as a worker", ran, parent.study.study_name)
            return _worker_result(config, parent, ran)
        registered = finishing_step.claim_finish(client, config, parent.study, parent.run_id, finishing)
        if registered is not None:
            return _already_registered(config, replace(parent, registered=registered))
        evaluated = finishing_step.evaluate_best(
            config, parent.study, inputs, tracking_uri=tracking_uri, unlogged=unlogged
        )
        registry = MlflowModelRegistry(tracking_uri)
        retrain = version_record.retrain_tags(registry, triggered_by)
        version = finishing_step.record_and_register(
            client,
            config,
            parent.study,
            parent.run_id,
            inputs=inputs,
            evaluated=evaluated,
            tracking_uri=tracking_uri,
            triggered_by=triggered_by,
            retrain=retrain,
        )
        version_record.describe(
            registry,
            model=config.model_name,
            version=version,
            run_id=parent.run_id,
            gate=evaluated.gate,
            alias=evaluated.alias,
            retrain=retrain,
        )
        result = _result(config, parent, evaluated, version=version, ran=ran)
        if config.distill is not None:  # a lighter student on the registered teacher's soft labels
            outcome = evaluated.outcome
            student = distil(
                client, config, teacher=outcome.model, teacher_version=version,
                teacher_metrics=outcome.model_metrics, data=inputs.data, parent_run_id=parent.run_id,
                experiment_id=parent.experiment, tracking_uri=tracking_uri, served_latency=served_latency,
            )  # fmt: skip
            result = replace(result, student=student)
        if progress is not None:
            progress.finished(finishing_step.summary(config, ran=ran, evaluated=evaluated, version=version))
        return result
    except MlflowException as exc:
        _mark_failed(client, parent.run_id)
        raise _as_modelloop_error(exc, "recording the training") from None
    except BaseException as exc:  # interrupted (SIGTERM, Ctrl-C): KILLED, never left RUNNING
        _mark_failed(client, parent.run_id, status=run_status_for(exc))
        raise
    finally:
        finishing.close()


def _worker_result(config: TrainingConfig, parent: _Parent, ran: int) -> TrainingResult:
    return TrainingResult(
        parent.run_id, config.model_name, None, None, None, trials_run=ran, experiment_id=parent.experiment
    )


def _already_registered(config: TrainingConfig, parent: _Parent) -> TrainingResult:
    """A training that registered its version before (a re-run, a retried pod, another pod of the tuning
    Job): nothing to do, nothing registered."""
    log.info(
        "study %s is complete and registered %s version %s; nothing to do",
        parent.study.study_name,
        config.model_name,
        parent.registered,
    )
    return TrainingResult(
        parent.run_id,
        config.model_name,
        parent.registered,
        None,
        None,
        experiment_id=parent.experiment,
    )


def _study_full(config: TrainingConfig, study: optuna.Study) -> bool:
    """Whether the study holds its `n_trials` finished trials (a time-limited study always is)."""
    n_trials = config.study.n_trials
    return n_trials is None or budget.counts(study)[0] >= n_trials


def _open_parent(client: MlflowClient, config: TrainingConfig) -> _Parent:
    """The study and the parent run (a deleted experiment is refused before either is created)."""
    try:
        records.existing_experiment(client, config.experiment_name)
    except MlflowException as exc:
        raise _as_modelloop_error(exc, f"reading experiment {config.experiment_name}") from None
    storage = open_storage(config.study.storage)
    study, created = open_study(config, storage)
    registered = study.user_attrs.get(REGISTERED_ATTR)
    n_trials = config.study.n_trials
    if registered is not None and n_trials is not None and budget.counts(study)[0] >= n_trials:
        # this training already ran to the end (a re-run of it); a larger budget continues the study
        return _Parent(study, str(study.user_attrs.get(PARENT_RUN_ATTR, "")), False, "", str(registered))
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
        raise _as_modelloop_error(exc, "opening the training run") from None
    return _Parent(study, run_id, new_run, experiment)


def _log_start(
    client: MlflowClient, run_id: str, config: TrainingConfig, inputs: Inputs, *, config_source: str | None
) -> None:
    records.log_start(
        client,
        run_id,
        config,
        baseline=describe_baseline(config.baseline, config.task),
        n_rows=len(inputs.prepared.x),
        n_features=inputs.prepared.x.shape[1],
        config_source=config_source,
    )


def _as_modelloop_error(exc: MlflowException, doing: str) -> ModelloopError:
    """MLflow's refusals (including "no such thing") as input errors; anything else (server errors, retries
    exhausted) as unavailable. Classified by `adapters.mlflow_errors`; the server's text is not quoted."""
    kind = mlflow_errors.kind_of(exc)
    detail = mlflow_errors.error_code(exc) or type(exc).__name__
    if kind in (mlflow_errors.Kind.NOT_FOUND, mlflow_errors.Kind.REFUSED):
        return InvalidInputError(f"MLflow refused a request while {doing} ({detail})")
    return UnavailableError(f"MLflow failed a request while {doing} ({detail})")


def _tune(
    config: TrainingConfig,
    parent: _Parent,
    data: Split,
    *,
    tracking_uri: str,
    progress: TrainingProgress | None,
    coordinate: bool,
) -> tuple[int, int]:
    """Run the trials: here, or (`coordinate`) here and in `study.workers` - 1 local worker processes.
    Returns (trials run, trial runs that could not be recorded)."""
    recorder = TrialRecorder(
        make_sink(
            tracking_uri,
            experiment_id=parent.experiment,
            parent_run_id=parent.run_id,
            metric=config.metric.name,
        ),
        progress=ParentProgress(MlflowClient(tracking_uri), parent.run_id),
    )
    callbacks: list[Any] = [recorder]
    if progress is not None:
        progress.tuning_started(metric=config.metric.name, total=config.study.n_trials)
        callbacks.append(progress.trial_finished)
    try:
        with quiet_optuna() if progress is not None else nullcontext():
            if coordinate:  # this process is one of the workers (it has the imports and the data already)
                before = len(parent.study.get_trials(deepcopy=False))
                workers.run_workers(
                    parent.study,
                    config,
                    tracking_uri=tracking_uri,
                    on_trial=None if progress is None else progress.trial_finished,
                    on_failed=recorder,  # the dead workers could not record these
                    tune_here=lambda: tune(parent.study, Objective(config, data), config, callbacks),
                )
                ran = len(parent.study.get_trials(deepcopy=False)) - before
            else:
                ran = tune(parent.study, Objective(config, data), config, callbacks)
    finally:
        stats = recorder.close()
    if stats.failed:
        log.warning(
            "%d trial runs could not be recorded in MLflow (%s)", stats.failed, "; ".join(stats.errors)
        )
    return ran, stats.failed


def _result(
    config: TrainingConfig, parent: _Parent, evaluated: Evaluated, *, version: str, ran: int
) -> TrainingResult:
    return TrainingResult(
        run_id=parent.run_id,
        model_name=config.model_name,
        version=version,
        gate_passed=evaluated.gate.passed,
        promoted_alias=evaluated.alias,
        metrics=evaluated.outcome.model_metrics,
        baseline_metrics=evaluated.outcome.baseline_metrics,
        gate_reasons=evaluated.gate.reasons,
        trials_run=ran,
        experiment_id=parent.experiment,
    )


def _mark_failed(client: MlflowClient, run_id: str, *, status: str = "FAILED") -> None:
    try:
        if client.get_run(run_id).info.status == "RUNNING":
            client.set_terminated(run_id, status)
    except Exception:  # the original error matters more than this one
        log.warning("could not mark training run %s as failed", run_id)


__all__ = ["TrainingResult", "run_training"]
