"""Loading a registered model version from MLflow and predicting on validated rows.

Called by `serving.hosting` (startup and hot swap) in a worker thread, never on the event loop. Models come
from the registry through the tracking server (`models:/NAME/VERSION`; with `--serve-artifacts` the server
proxies the artifacts, so no object-store credentials are needed). The scikit-learn flavor is preferred (one
`predict_proba` call gives both the prediction and the class probabilities); any other model goes through
`mlflow.pyfunc`. A version is warmed up with one prediction before it is declared loaded.

Messages name what is missing (the model, its alias, its version) or that the registry is unreachable,
never more than a clipped caller string. How long an unreachable MLflow takes to fail is bounded by the
entry point (MLflow's HTTP settings); `DetachedLoader` makes a load that still hangs abandonable, so a
stopping process never waits for it.
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from modelloop.contract.errors import ConfigError, ModelloopError, NotFoundError, UnavailableError
from modelloop.contract.registry import ALIAS_FOR_ROLE, REFERENCE_PROFILE_PATH, STAGE_FOR_ROLE, Role

from .errors import ModelLoadError, NotReadyError, clip
from .fast_input import fitted_order, matrix_feeder
from .schema import Features, ModelSchema

log = logging.getLogger(__name__)

Prediction = tuple[np.ndarray[Any, Any], np.ndarray[Any, Any] | None]


@dataclass
class LoadedModel:
    """One loaded, warmed-up version: its schema and a function from rows to (predictions, probabilities)."""

    name: str
    version: str
    schema: ModelSchema
    platform: str
    predict_fn: Callable[[Features], Prediction]

    def predict(self, features: Features) -> Prediction:
        return self.predict_fn(features)


def _frame(schema: ModelSchema, features: Features, order: list[str] | None = None) -> Any:
    """A DataFrame of the rows, columns in `order` (default: the signature's)."""
    import pandas as pd

    names = schema.names
    if order is None or order == names:
        if features.matrix is not None:
            return pd.DataFrame(features.matrix, columns=names, copy=False)
        return pd.DataFrame({n: features.columns[n] for n in names})
    if features.matrix is not None:
        return pd.DataFrame(features.matrix[:, [names.index(n) for n in order]], columns=order, copy=False)
    return pd.DataFrame({n: features.columns[n] for n in order})


def sklearn_predictor(
    model: Any, schema: ModelSchema, *, label: str = "model"
) -> Callable[[Features], Prediction]:
    """Rows -> (predictions, class probabilities or None) for a scikit-learn model: a numpy matrix where the
    model answers one exactly as it answers a DataFrame (`serving.fast_input`), else a DataFrame whose
    columns are in the order the model was fitted with."""
    classes = getattr(model, "classes_", None)
    classify = classes is not None and hasattr(model, "predict_proba")
    method = model.predict_proba if classify else model.predict
    order = fitted_order(model, schema)

    def frame(features: Features) -> Any:
        return _frame(schema, features, order)

    feed = matrix_feeder(model, schema, method, frame) or frame
    log.info("%s is fed %s", label, "a numpy matrix (fast path)" if feed is not frame else "a DataFrame")
    if classify:
        labels = np.asarray(classes)

        def classify_rows(features: Features) -> Prediction:
            proba = np.asarray(method(feed(features)), dtype=np.float64)
            return labels[np.argmax(proba, axis=1)], proba

        return classify_rows

    def regress(features: Features) -> Prediction:
        out = np.asarray(method(feed(features))).reshape(features.n_rows, -1)
        if out.shape[1] != 1:
            raise ValueError(f"model gives {out.shape[1]} outputs per row; one is served")
        return out[:, 0], None

    return regress


def _pyfunc_predictor(model: Any, schema: ModelSchema) -> Callable[[Features], Prediction]:
    def predict(features: Features) -> Prediction:
        out = np.asarray(model.predict(_frame(schema, features)))
        return out.reshape(features.n_rows, -1)[:, 0] if out.ndim > 1 else out, None

    return predict


def public_uri(uri: str) -> str:
    """`uri` fit for a message or a log line: without the user and password it may carry."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit(parts._replace(netloc=netloc))


def resolve_version(client: Any, name: str, ref: str, *, where: str = "MLflow") -> str:
    """A version number from `VERSION` or an alias (`production`, `challenger`, or any other).

    Raises NotFoundError naming what is missing (the model, or its alias) and UnavailableError when `where`
    (the registry, e.g. "MLflow at http://...") cannot be reached."""
    if ref.isdigit():
        return ref
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(name, ref).version)
    except MlflowException as exc:
        _raise_unless_missing(exc, where, f"resolving {clip(name)}@{clip(ref)}")
    # older registries: the deprecated stage of the same role
    roles = {alias: role for role, alias in ALIAS_FOR_ROLE.items()}
    role = roles.get(ref)
    if role is not None:
        try:
            with warnings.catch_warnings():  # stages are deprecated; honouring them is the point here
                warnings.simplefilter("ignore", FutureWarning)
                latest = client.get_latest_versions(name, stages=[STAGE_FOR_ROLE[Role(role)]])
        except MlflowException as exc:
            _raise_unless_missing(exc, where, f"resolving {clip(name)}@{clip(ref)}")
            latest = []
        if latest:
            return str(latest[0].version)
    _require_model(client, name, where)
    raise NotFoundError(f"model {clip(name)} has no version with alias {clip(ref)}")


def _require_model(client: Any, name: str, where: str) -> None:
    """NotFoundError when no model `name` is registered (a clearer message than "no such version")."""
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException as exc:
        _raise_unless_missing(exc, where, f"looking up model {clip(name)}")
        raise NotFoundError(f"model {clip(name)} is not registered in {where}") from None


def _raise_unless_missing(exc: Exception, where: str, doing: str) -> None:
    """Return when MLflow said "not found" (the caller decides what is missing); raise otherwise."""
    code = str(getattr(exc, "error_code", ""))
    if code in {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"}:
        return
    raise UnavailableError(f"{where} unreachable while {doing} ({code or type(exc).__name__})") from None


def _client(tracking_uri: str) -> Any:
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        return mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    except MlflowException:
        raise ConfigError(
            f"tracking URI {clip(public_uri(tracking_uri), 120)} is not one MLflow supports"
        ) from None


def load_model(tracking_uri: str, name: str, ref: str, *, max_rows: int = 100_000) -> LoadedModel:
    """Load `name` at `ref` (version or alias) from the registry, build its schema, warm it up."""
    import mlflow
    from mlflow.exceptions import MlflowException

    client = _client(tracking_uri)
    where = f"MLflow at {public_uri(tracking_uri)}"
    version = resolve_version(client, name, ref, where=where)
    try:
        mv = client.get_model_version(name, version)
    except MlflowException as exc:
        _raise_unless_missing(exc, where, f"reading {clip(name)}/{clip(version)}")
        _require_model(client, name, where)
        raise NotFoundError(f"model {clip(name)} has no version {clip(version)}") from None
    uri = f"models:/{name}/{version}"
    mlflow.set_tracking_uri(tracking_uri)
    try:
        info = mlflow.models.get_model_info(uri)
        categories = _categories(mv.run_id) if mv.run_id else {}
        if "sklearn" in info.flavors:
            model = mlflow.sklearn.load_model(uri)
            classes = getattr(model, "classes_", None)
            schema = ModelSchema.from_signature(
                info.signature, classes=None if classes is None else list(classes), categories=categories,
                max_rows=max_rows,
            )  # fmt: skip
            loaded = LoadedModel(
                name,
                version,
                schema,
                "sklearn",
                sklearn_predictor(model, schema, label=f"model {name}/{version}"),
            )
        else:
            model = mlflow.pyfunc.load_model(uri)
            schema = ModelSchema.from_signature(info.signature, categories=categories, max_rows=max_rows)
            loaded = LoadedModel(name, version, schema, "mlflow_pyfunc", _pyfunc_predictor(model, schema))
    except ModelloopError:
        raise
    except MlflowException as exc:
        _raise_unless_missing(exc, where, f"loading {clip(name)}/{clip(version)}")
        log.warning("model %s/%s cannot be loaded", name, version, exc_info=True)
        raise ModelLoadError(
            f"model {clip(name)} version {clip(version)} cannot be loaded ({type(exc).__name__})"
        ) from None
    except Exception as exc:
        log.warning("model %s/%s cannot be loaded", name, version, exc_info=True)
        raise ModelLoadError(
            f"model {clip(name)} version {clip(version)} cannot be loaded ({type(exc).__name__})"
        ) from None
    warm_up(loaded)
    log.info("model %s/%s loaded (%s, %d columns)", name, version, loaded.platform, len(schema.columns))
    return loaded


class DetachedLoader:
    """A loader running each load in a daemon thread of its own and waiting for it, until `abandon()`.

    `serving.hosting` calls it from a worker thread; `serving.app` abandons the loads when the server stops:
    every waiting call then raises NotReadyError at once, the loads left behind finish (or fail) unobserved,
    and the process exits without waiting for them (a load stuck on a silent MLflow cannot hold up a
    SIGTERM). Safe to call from several threads.
    """

    def __init__(self, load: Callable[[str, str], LoadedModel]) -> None:
        self._load = load
        self._lock = threading.Lock()
        self._waiting: set[threading.Event] = set()
        self._abandoned = False

    def __call__(self, name: str, ref: str) -> LoadedModel:
        done = threading.Event()
        outcome: list[LoadedModel | Exception] = []

        def work() -> None:
            try:
                outcome.append(self._load(name, ref))
            except Exception as exc:
                outcome.append(exc)
            finally:
                done.set()

        with self._lock:
            if self._abandoned:
                raise NotReadyError("the scoring server is stopping")
            self._waiting.add(done)
        try:
            threading.Thread(target=work, name=f"load {clip(name)}", daemon=True).start()
            done.wait()
        finally:
            with self._lock:
                self._waiting.discard(done)
        if not outcome:
            raise NotReadyError(
                f"the scoring server is stopping; the load of model {clip(name)} was abandoned"
            )
        if isinstance(outcome[0], Exception):
            raise outcome[0]
        return outcome[0]

    def abandon(self) -> None:
        """Release every waiting call now, and refuse new loads."""
        with self._lock:
            self._abandoned = True
            for done in self._waiting:
                done.set()


def _categories(run_id: str) -> dict[str, frozenset[str]]:
    """Known categories per string column from the run's reference profile, where the profile lists them
    all (a profile that pooled rare categories cannot tell unseen from rare: that column is not checked)."""
    import mlflow

    from modelloop.contract.profile import OTHER_CATEGORY, CategoricalProfile, ReferenceProfile

    try:
        text = mlflow.artifacts.load_text(f"runs:/{run_id}/{REFERENCE_PROFILE_PATH}")
        profile = ReferenceProfile.model_validate_json(text)
    except Exception:
        log.info("run %s has no readable reference profile; unseen categories are not checked", run_id)
        return {}
    return {
        name: frozenset(p.frequencies)
        for name, p in profile.features.items()
        if isinstance(p, CategoricalProfile) and OTHER_CATEGORY not in p.frequencies
    }


def warm_up(model: LoadedModel) -> None:
    """One prediction on a synthetic row, so the first real request pays no lazy initialisation."""
    schema = model.schema
    if schema.all_float:
        features = Features(1, matrix=np.zeros((1, len(schema.columns))))
    else:
        cols: dict[str, np.ndarray[Any, Any]] = {}
        for c in schema.columns:
            if c.kind == "string":
                known = sorted(schema.categories.get(c.name, ()))
                cols[c.name] = np.array([known[0] if known else ""], dtype=object)
            else:
                cols[c.name] = np.zeros(1, dtype=c.dtype)
        features = Features(1, columns=cols)
    try:
        pred, _ = model.predict(features)
    except Exception as exc:
        log.warning("model %s/%s fails its warm-up prediction", model.name, model.version, exc_info=True)
        raise ModelLoadError(
            f"model {model.name} version {model.version} fails its warm-up prediction ({type(exc).__name__})"
        ) from None
    if len(pred) != 1:
        raise ModelLoadError(f"model {model.name} version {model.version} returned {len(pred)} rows for 1")


__all__ = [
    "DetachedLoader",
    "LoadedModel",
    "Prediction",
    "load_model",
    "public_uri",
    "resolve_version",
    "sklearn_predictor",
    "warm_up",
]
