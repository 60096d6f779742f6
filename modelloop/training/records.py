"""What a training leaves in MLflow's tracking store: the parent run and everything on it.

Called by `training.run`. `connect` checks the tracking server answers; `parent_run` finds or creates the
parent run (one per training; workers sharing a study nest their trials under the same one, found through the
study); `log_start` records the params, tags and resolved config when the run is created; `log_outcome`
records, inside the active parent run (MLflow's fluent API: `training.run` scopes the tracking URI for it),
the best params, the model's and the baseline's test metrics side by side, the dataset lineage, the plots, the
model (`training.model_logging`: the flavour made for it, skops with reviewed trusted types, signature and
input example) and the reference profile at `REFERENCE_PROFILE_PATH`.
"""

from __future__ import annotations

import logging
import subprocess
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import mlflow.data.pandas_dataset
import optuna
import pandas as pd
import requests
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.utils.mlflow_tags import MLFLOW_GIT_COMMIT, MLFLOW_RUN_NAME

from modelloop.adapters.mlflow_experiments import ensure_experiment
from modelloop.contract.errors import InvalidInputError, UnavailableError, public_uri
from modelloop.contract.registry import (
    BASELINE_METRIC_PREFIX,
    PARAM_DIRECTION,
    PARAM_METRIC,
    PARAM_TARGET,
    PARAM_TASK,
    PRODUCTION_METRIC_PREFIX,
    RESOLVED_CONFIG_PATH,
    TAG_CONFIG_PATH,
    TAG_RUN_KIND,
    TAG_TRIGGERED_BY,
    TEST_METRIC_PREFIX,
)
from modelloop.training import model_logging
from modelloop.training.config import TrainingConfig, dump_config
from modelloop.training.datasets import LoadedDataset
from modelloop.training.gate import Production
from modelloop.training.serialization import version_tags
from modelloop.training.splits import Split
from modelloop.training.study import PARENT_RUN_ATTR, parent_run_of, safe_url

log = logging.getLogger(__name__)

HISTORY_PLOT_PATH = "plots/optimization_history.png"
IMPORTANCE_PLOT_PATH = "plots/param_importances.png"
#: The model's, the baseline's and production's test metrics side by side (an MLflow table artifact).
COMPARISON_TABLE_PATH = "comparison/test_metrics.json"


def connect(tracking_uri: str) -> MlflowClient:
    """A client for the tracking server, after checking it answers."""
    if tracking_uri.startswith(("http://", "https://")):
        from mlflow.utils.credentials import get_default_host_creds
        from mlflow.utils.rest_utils import http_request

        try:  # through MLflow's own HTTP layer: its credential and TLS variables apply (MLFLOW_TRACKING_*)
            creds = get_default_host_creds(tracking_uri)  # type: ignore[no-untyped-call]
            http_request(creds, "/health", "GET", max_retries=0, timeout=10)  # type: ignore[no-untyped-call]
        except (requests.RequestException, MlflowException):
            raise UnavailableError(f"cannot reach MLflow at {public_uri(tracking_uri)}") from None
    client = MlflowClient(tracking_uri)
    try:
        client.search_experiments(max_results=1)
    except MlflowException:
        raise UnavailableError(f"MLflow at {public_uri(tracking_uri)} does not answer") from None
    return client


def existing_experiment(client: MlflowClient, name: str) -> str | None:
    """The id of the active experiment of that name, or None. A deleted one is an InvalidInputError (MLflow
    keeps the name until the experiment is purged); `run_training` asks before it creates anything."""
    found = client.get_experiment_by_name(name)
    if found is None:
        return None
    if found.lifecycle_stage == "deleted":
        raise InvalidInputError(
            f"the MLflow experiment {name!r} is deleted; restore it (mlflow experiments restore "
            f"--experiment-id {found.experiment_id}) or name another one in the config (experiment)"
        )
    return str(found.experiment_id)


def experiment_id(client: MlflowClient, name: str) -> str:
    """The experiment's id, creating it on first use (safe when workers race), marked as a model-training
    experiment (`adapters.mlflow_experiments`)."""
    existing_experiment(client, name)  # a deleted one is refused
    return ensure_experiment(client, name)


def git_commit(where: Path) -> str | None:
    """The commit checked out where the config lives (None outside a git repository)."""
    try:
        out = subprocess.run(
            ["git", "-C", str(where), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else None


def parent_run(
    client: MlflowClient, study: optuna.Study, *, created: bool, shared: bool, experiment: str, run_name: str
) -> tuple[str, bool]:
    """The parent run of this training: the one recorded on a shared study if it is still open, else a new one
    (recorded on the study). Returns (run id, created)."""
    if shared and not created:
        run_id = parent_run_of(study)
        if run_id:
            try:
                run = client.get_run(run_id)
            except MlflowException:
                run = None
            if run is not None and run.info.status != "FINISHED" and run.info.lifecycle_stage == "active":
                if run.info.status != "RUNNING":
                    client.update_run(run_id, status="RUNNING")
                return run_id, False
    run = client.create_run(experiment, tags={TAG_RUN_KIND: "training", MLFLOW_RUN_NAME: run_name})
    study.set_user_attr(PARENT_RUN_ATTR, run.info.run_id)
    return run.info.run_id, True


def log_start(
    client: MlflowClient,
    run_id: str,
    config: TrainingConfig,
    *,
    baseline: str,
    n_rows: int,
    n_features: int,
    config_source: str | None,
) -> None:
    """Params, tags and the resolved config of a new parent run."""
    params = {
        PARAM_METRIC: config.metric.name,
        PARAM_DIRECTION: config.direction,
        PARAM_TASK: config.task,
        PARAM_TARGET: config.target,
        "estimator": config.estimator.label,
        "baseline": baseline,
        "split.kind": config.split.kind,
        "split.test_size": str(config.split.test_size),
        "split.validation_size": str(config.split.validation_size),
        "study.name": config.study_name,
        "study.n_trials": str(config.study.n_trials),
        "study.storage": safe_url(config.study.storage) if config.study.storage else "memory",
        "seed": str(config.seed),
        "dataset.rows": str(n_rows),
        "dataset.features": str(n_features),
    }
    tags: dict[str, str] = {}
    where = Path(config_source).resolve().parent if config_source else Path.cwd()
    commit = git_commit(where)
    if commit:
        tags[MLFLOW_GIT_COMMIT] = commit
    else:
        log.info("no git commit recorded: %s is not in a git repository", where)
    if config_source:
        tags[TAG_CONFIG_PATH] = config_source
    client.log_batch(
        run_id, params=[Param(k, v) for k, v in params.items()], tags=[RunTag(k, v) for k, v in tags.items()]
    )
    client.log_text(run_id, dump_config(config), RESOLVED_CONFIG_PATH)


@dataclass(frozen=True)
class Outcome:
    """What the tuning and evaluation produced, to be recorded on the parent run."""

    model: Any
    best_params: dict[str, Any]
    best_value: float
    model_metrics: dict[str, float]
    baseline_metrics: dict[str, float]
    production: Production | None
    trial_counts: dict[str, int]
    unlogged_trials: int


def _dataset_inputs(loaded: LoadedDataset, data: Split, target: str) -> None:
    with warnings.catch_warnings():
        # MLflow's digest code trips pandas' own deprecation warnings; nothing to fix on our side; its schema
        # inference repeats the hint about integer columns (see log_outcome)
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=FutureWarning)
        warnings.simplefilter("ignore", category=UserWarning)
        full = mlflow.data.pandas_dataset.from_pandas(
            loaded.frame, source=loaded.source, name=loaded.name, targets=target
        )
        test_frame = data.x_test.assign(**{target: data.y_test.to_numpy()})
        test = mlflow.data.pandas_dataset.from_pandas(
            test_frame, source=loaded.source, name=f"{loaded.name}-test", targets=target
        )
        # the schema (and its hint) is computed lazily, when the input is logged
        mlflow.log_input(full, context="training")
        mlflow.log_input(test, context="test")


def comparison_table(outcome: Outcome, *, metric: str) -> pd.DataFrame:
    """One row per test metric: the model, the baseline and (when scored) production side by side; the
    optimised metric first. Shown as a table in the MLflow UI's artifact view."""
    production = outcome.production.metrics if outcome.production is not None else None
    rows = []
    for name in sorted(outcome.model_metrics, key=lambda n: (n != metric, n)):
        row: dict[str, Any] = {
            "metric": name,
            "optimised": name == metric,
            "model": outcome.model_metrics[name],
            "baseline": outcome.baseline_metrics.get(name),
        }
        if production is not None:
            row["production"] = production.get(name)
        rows.append(row)
    return pd.DataFrame(rows)


def log_outcome(
    client: MlflowClient,
    run_id: str,
    config: TrainingConfig,
    outcome: Outcome,
    *,
    study: optuna.Study,
    loaded: LoadedDataset,
    data: Split,
    triggered_by: str | None,
) -> Any:
    """Record the outcome on the active parent run; returns MLflow's ModelInfo of the logged model."""
    if triggered_by:
        mlflow.set_tag(TAG_TRIGGERED_BY, triggered_by)
    mlflow.log_params({f"best.{k}": v for k, v in outcome.best_params.items()})
    metrics = {f"{TEST_METRIC_PREFIX}{k}": v for k, v in outcome.model_metrics.items()}
    metrics.update({f"{BASELINE_METRIC_PREFIX}{k}": v for k, v in outcome.baseline_metrics.items()})
    if outcome.production is not None and outcome.production.metrics is not None:
        metrics.update({f"{PRODUCTION_METRIC_PREFIX}{k}": v for k, v in outcome.production.metrics.items()})
    metrics[f"best.validation.{config.metric.name}"] = outcome.best_value
    metrics.update({f"trials.{k.lower()}": float(v) for k, v in outcome.trial_counts.items()})
    metrics["trials.unlogged"] = float(outcome.unlogged_trials)
    client.log_batch(run_id, metrics=[Metric(k, v, _now_ms(), 0) for k, v in metrics.items()])
    mlflow.log_table(comparison_table(outcome, metric=config.metric.name), COMPARISON_TABLE_PATH)
    _dataset_inputs(loaded, data, config.target)
    from modelloop.training import plots  # matplotlib: only the finishing step pays its import, not workers

    for figure, path in (
        (plots.optimization_history(study, metric=config.metric.name), HISTORY_PLOT_PATH),
        (plots.param_importances(study), IMPORTANCE_PLOT_PATH),
    ):
        if figure is None:
            log.info("plot %s skipped: too few completed trials or no varying parameter", path)
            continue
        mlflow.log_figure(figure, path)
    # the flavour made for the model; skops with the reviewed trusted types unless the config says pickle
    mlflow.set_tags(version_tags(config, outcome.model))
    return model_logging.log_with_profile(config, outcome.model, data.x_test, task=config.task)


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)


@contextmanager
def fluent_tracking_uri(tracking_uri: str) -> Iterator[None]:
    """MLflow's fluent API (`start_run`, `log_*`, `mlflow.sklearn.log_model`) reads only the process-wide
    tracking URI: set it for the block, restore the previous one (unset included) afterwards."""
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    with _use_tracking_uri(tracking_uri):
        yield


__all__ = [
    "COMPARISON_TABLE_PATH",
    "HISTORY_PLOT_PATH",
    "IMPORTANCE_PLOT_PATH",
    "PRODUCTION_METRIC_PREFIX",
    "Outcome",
    "comparison_table",
    "connect",
    "existing_experiment",
    "experiment_id",
    "fluent_tracking_uri",
    "git_commit",
    "log_outcome",
    "log_start",
    "parent_run",
]
