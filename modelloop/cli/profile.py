"""`modelloop profile`: give a model version logged outside modelloop what `modelloop train` records for its
own, so the scoring server, monitoring and the controller treat it the same.

For a version logged by a team's own code (`mlflow.sklearn.log_model`, a pyfunc, ...) and registered from
its run, it loads the version, predicts the given rows (a CSV or Parquet file, or a SQL query) and builds
the reference profile (`modelloop.contract.profile.build_profile`, as training does on its test set). With
`--target` it scores the version on those rows; with `--baseline` (another registered version, or `dummy`)
it scores the baseline on the same rows and records the gate's verdict against it. Everything is computed
and checked first; only then is it written, through `modelloop.adapters.mlflow_profiles`. A bad input (an
unknown version, missing columns, an unreadable file, a params clash with the run) is one line and writes
nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import click

from modelloop.cli.errors import reports_errors
from modelloop.cli.options import option, tracking_uri_option
from modelloop.contract.errors import InvalidInputError, clip
from modelloop.contract.timestamps import iso_utc

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from modelloop.adapters.mlflow_profiles import ProfileAttachment
    from modelloop.adapters.mlflow_registry import MlflowModelRegistry

Task = Literal["classification", "regression"]


@dataclass(frozen=True)
class Rows:
    """The rows to profile, and where they came from (for the version's tag; no credentials)."""

    frame: pd.DataFrame
    source: str


@dataclass(frozen=True)
class Scored:
    """A model's metrics on the rows (empty without a target)."""

    label: str
    metrics: dict[str, float]


class _Predictor:
    """A loaded model as the metrics code calls it: `predict` gives one value per row (a pyfunc may answer
    with a table), `predict_proba` and `classes_` only where the model has them."""

    def __init__(self, model: Any) -> None:
        self._model = model
        if hasattr(model, "predict_proba"):
            self.predict_proba = model.predict_proba
        if hasattr(model, "classes_"):
            self.classes_ = model.classes_

    def predict(self, x: pd.DataFrame) -> np.ndarray:
        import numpy as np

        out = np.asarray(self._model.predict(x))
        return out.reshape(len(x), -1)[:, 0] if out.ndim > 1 else out


def read_rows(data: Path | None, query: str | None, url: str | None) -> Rows:
    """The rows named by `--data`, or `--query` with `--url`."""
    from modelloop.training.config import DatasetConfig
    from modelloop.training.datasets import load_dataset

    if (data is None) == (query is None):
        raise InvalidInputError("give either --data FILE or --query SQL (with --url)")
    if query is not None and not url:
        raise InvalidInputError("--query needs --url (a SQLAlchemy URL of the database)")
    if data is not None:
        if url:
            raise InvalidInputError("--url goes with --query, not with --data")
        if data.suffix.lower() not in {".csv", ".parquet", ".pq"}:
            raise InvalidInputError(f"--data {clip(str(data))}: give a .csv or .parquet file")
        loaded = load_dataset(DatasetConfig(path=data))
        source = f"file {data}"
    else:
        import sqlalchemy as sa

        loaded = load_dataset(DatasetConfig(query=query, url=url))
        try:
            source = f"query on {sa.make_url(str(url)).render_as_string(hide_password=True)}"
        except sa.exc.ArgumentError:
            source = "query"
    if loaded.frame.empty:
        raise InvalidInputError("the data has no rows to profile")
    return Rows(loaded.frame, f"{source} ({len(loaded.frame)} rows)")


def feature_columns(signature: Any, frame: pd.DataFrame, target: str | None) -> list[str]:
    """The columns the model takes: its signature's inputs, else every column but the target; an error
    naming the missing ones."""
    if target is not None and target not in frame.columns:
        raise InvalidInputError(f"--target {clip(target)} is not a column of the data")
    inputs = signature.inputs if signature is not None else None
    if inputs is None or not inputs.has_input_names():
        return [str(c) for c in frame.columns if c != target]
    wanted = [str(spec.name) for spec in inputs.inputs if spec.required or spec.name in frame.columns]
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        shown = ", ".join(clip(c, 40) for c in missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise InvalidInputError(f"the data lacks {len(missing)} column(s) the model takes: {shown}")
    return wanted


def predict(model: _Predictor, x: pd.DataFrame, label: str) -> np.ndarray:
    """The model's predictions for `x`; an error naming the model when it cannot predict them."""
    try:
        out = model.predict(x)
    except Exception as exc:  # the model's own code: anything it raises means these rows do not fit it
        raise InvalidInputError(f"{label} cannot predict these rows ({type(exc).__name__})") from None
    if len(out) != len(x):
        raise InvalidInputError(f"{label} returned {len(out)} predictions for {len(x)} rows")
    return out


def infer_task(model: Any, flavour: str, predictions: np.ndarray) -> Task:
    """Classification for a scikit-learn classifier or non-float predictions, regression otherwise."""
    import numpy as np

    if flavour == "sklearn":
        from sklearn.base import is_classifier

        return "classification" if is_classifier(model) else "regression"
    return "regression" if np.issubdtype(np.asarray(predictions).dtype, np.floating) else "classification"


def choose_metric(metric: str | None, task: Task, model: _Predictor) -> str:
    from modelloop.training.metrics import METRICS

    if metric is None:
        if task == "regression":
            return "rmse"
        return "roc_auc" if hasattr(model, "predict_proba") else "accuracy"
    if metric not in METRICS:
        raise InvalidInputError(f"--metric {clip(metric, 40)}: choose one of {', '.join(METRICS)}")
    if METRICS[metric].task != task:
        raise InvalidInputError(f"--metric {metric} is a {METRICS[metric].task} metric; the task is {task}")
    if METRICS[metric].needs_proba and not hasattr(model, "predict_proba"):
        raise InvalidInputError(f"--metric {metric} needs probabilities; the model gives labels only")
    return metric


def score_on(
    model: _Predictor, x: pd.DataFrame, y: pd.Series, *, task: Task, metric: str, label: str
) -> Scored:
    from modelloop.training.metrics import evaluate

    try:
        return Scored(label, evaluate(model, x, y, task, required=metric))
    except InvalidInputError:
        raise
    except (ValueError, TypeError) as exc:
        raise InvalidInputError(f"{label} cannot be scored on these rows ({type(exc).__name__})") from None


def score_baseline(
    registry: MlflowModelRegistry, ref: str, rows: pd.DataFrame, y: pd.Series, *, task: Task, metric: str
) -> Scored:
    """The baseline's metrics on the same rows: `dummy` (the class prior or the mean, fitted on these
    labels) or a registered version (`NAME/VERSION`, `NAME@ALIAS`)."""
    from modelloop.contract.model_ref import parse_model_ref
    from modelloop.serving.model_host import resolve_version

    if ref == "dummy":
        from sklearn.dummy import DummyClassifier, DummyRegressor

        x = rows.drop(columns=[str(y.name)])
        dummy = DummyClassifier(strategy="prior") if task == "classification" else DummyRegressor()
        fitted = _Predictor(dummy.fit(x, y))
        return score_on(fitted, x, y, task=task, metric=metric, label="baseline dummy")
    name, at = parse_model_ref(ref)
    version = resolve_version(registry, name, at)
    registry.version(name, version)
    artifact = registry.load_model(name, version)
    model = _Predictor(artifact.model)
    label = f"baseline {clip(name)}/{version}"
    x = rows[feature_columns(artifact.signature, rows, str(y.name))]
    return score_on(model, x, y, task=task, metric=metric, label=label)


def gate_tags(model: Scored, baseline: Scored, *, metric: str) -> dict[str, str]:
    """The gate's verdict against the baseline, as the tags training writes."""
    from modelloop.contract.registry import TAG_GATE, TAG_GATE_MARGIN, TAG_GATE_REASONS
    from modelloop.training.metrics import better, metric_direction

    over = better(model.metrics[metric], baseline.metrics[metric], metric_direction(metric))
    passed = over > 0
    reason = (
        f"beats {baseline.label} on {metric} by {over:+.4g}"
        if passed
        else f"does not beat {baseline.label} on {metric} ({over:+.4g})"
    )
    return {
        TAG_GATE: "passed" if passed else "failed",
        TAG_GATE_REASONS: reason + " (profiled rows, modelloop profile)",
        TAG_GATE_MARGIN: f"{over:.6g}",
    }


def check_params(existing: dict[str, str], wanted: dict[str, str]) -> None:
    """A param the run already holds with another value: MLflow refuses to change it; say which."""
    for key, value in wanted.items():
        if key in existing and existing[key] != value:
            raise InvalidInputError(
                f"the version's run already records {key}={clip(existing[key], 40)}; "
                f"pass the matching option ({value!r} was asked for)"
            )


@dataclass(frozen=True)
class _Asked:
    model: str
    rows: Rows
    target: str | None
    task: Task | None
    metric: str | None
    baseline: str | None
    replace: bool


def build(registry: MlflowModelRegistry, asked: _Asked) -> tuple[str, str, str, ProfileAttachment, str]:
    """Everything to write, checked: (name, version, run id, the attachment, the summary line)."""
    from modelloop.adapters.mlflow_profiles import ProfileAttachment, has_artifact
    from modelloop.contract.model_ref import parse_model_ref
    from modelloop.contract.profile import build_profile, profile_summary
    from modelloop.contract.registry import (
        BASELINE_METRIC_PREFIX,
        PARAM_DIRECTION,
        PARAM_METRIC,
        PARAM_TARGET,
        PARAM_TASK,
        REFERENCE_PROFILE_PATH,
        REFERENCE_PROFILE_SUMMARY_PATH,
        TAG_GATE,
        TAG_PROFILE_SOURCE,
        TAG_PROFILED_AT,
        TAG_TRAINING_RUN,
        TEST_METRIC_PREFIX,
    )
    from modelloop.serving.model_host import resolve_version
    from modelloop.training.metrics import metric_direction

    if asked.baseline is not None and asked.target is None:
        raise InvalidInputError("--baseline needs --target: the gate compares scores on labelled rows")
    name, at = parse_model_ref(asked.model)
    version = resolve_version(registry, name, at)
    info = registry.version(name, version)
    if info.run_id is None:
        raise InvalidInputError(
            f"model {clip(name)} version {version} was registered without a run; register it from the run "
            "that logged it (runs:/RUN_ID/PATH) to attach a profile"
        )
    if not asked.replace and has_artifact(registry, info.run_id, REFERENCE_PROFILE_PATH):
        raise InvalidInputError(
            f"model {clip(name)} version {version} already has a reference profile; pass --replace to write "
            "a new one"
        )
    artifact = registry.load_model(name, version)
    model = _Predictor(artifact.model)
    frame = asked.rows.frame
    x = frame[feature_columns(artifact.signature, frame, asked.target)]
    label = f"model {clip(name)}/{version}"
    predictions = predict(model, x, label)
    task = asked.task or infer_task(artifact.model, artifact.flavour, predictions)
    profile = build_profile(x, predictions, task=task)
    params: dict[str, str] = {PARAM_TASK: task}
    metrics: dict[str, float] = {}
    version_tags = {
        TAG_TRAINING_RUN: info.run_id,
        TAG_PROFILE_SOURCE: asked.rows.source,
        TAG_PROFILED_AT: iso_utc(time.time()),
    }
    said = f"profiled {name}/{version} ({task}) on {asked.rows.source}"
    if asked.target is not None:
        metric = choose_metric(asked.metric, task, model)
        y = frame[asked.target]
        scored = score_on(model, x, y, task=task, metric=metric, label=label)
        params.update(
            {PARAM_METRIC: metric, PARAM_DIRECTION: metric_direction(metric), PARAM_TARGET: asked.target}
        )
        metrics.update({f"{TEST_METRIC_PREFIX}{k}": v for k, v in scored.metrics.items()})
        said += f"; {metric} {scored.metrics[metric]:.4g}"
        if asked.baseline is not None:
            base = score_baseline(registry, asked.baseline, frame, y, task=task, metric=metric)
            metrics.update({f"{BASELINE_METRIC_PREFIX}{k}": v for k, v in base.metrics.items()})
            gate = gate_tags(scored, base, metric=metric)
            version_tags.update(gate)
            said += f"; gate {gate[TAG_GATE]} vs {base.label} ({base.metrics[metric]:.4g})"
    check_params(registry.run(info.run_id).params, params)
    files = {
        REFERENCE_PROFILE_PATH: profile.model_dump_json(),
        REFERENCE_PROFILE_SUMMARY_PATH: profile_summary(profile),
    }
    attachment = ProfileAttachment(files=files, params=params, metrics=metrics, version_tags=version_tags)
    return name, version, info.run_id, attachment, said


@click.command()
@option("--model", required=True, help="The version to profile: NAME/VERSION or NAME@ALIAS.")
@option("--data", type=click.Path(path_type=Path), help="A .csv or .parquet file of rows it scores.")
@option("--query", help="A SQL query giving the rows (with --url).")
@option("--url", help="SQLAlchemy URL of the database --query reads.")
@option("--target", help="The label column: scores the version (and the gate, with --baseline).")
@option(
    "--task",
    type=click.Choice(["classification", "regression"]),
    help="Default: from the model (a scikit-learn classifier, or non-float predictions: classification).",
)
@option("--metric", help="The metric the gate compares (default: roc_auc, accuracy or rmse).")
@option(
    "--baseline",
    help="What the version must beat on these rows: NAME/VERSION, NAME@ALIAS or dummy (needs --target).",
)
@option("--replace", is_flag=True, help="Write a new profile over one the version already has.")
@tracking_uri_option()
@reports_errors
def profile(
    *,
    model: str,
    data: Path | None,
    query: str | None,
    url: str | None,
    target: str | None,
    task: Task | None,
    metric: str | None,
    baseline: str | None,
    replace: bool,
    tracking_uri: str | None,
) -> None:
    """Attach a reference profile (and a gate verdict) to a version logged outside modelloop."""
    from modelloop.adapters.mlflow_profiles import attach_profile
    from modelloop.adapters.mlflow_registry import MlflowModelRegistry
    from modelloop.contract.logs import configure_logging
    from modelloop.contract.settings import CommonSettings

    settings = CommonSettings(tracking_uri=tracking_uri) if tracking_uri else CommonSettings()
    configure_logging(settings.log_level, settings.log_format)
    rows = read_rows(data, query, url)
    registry = MlflowModelRegistry(settings.tracking_uri)
    asked = _Asked(model, rows, target, task, metric, baseline, replace)
    name, version, run_id, attachment, said = build(registry, asked)
    attach_profile(registry, name, version, run_id, attachment)
    click.echo(said)


__all__ = ["profile"]
