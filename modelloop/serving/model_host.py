"""Loading a registered model version from the registry and predicting on validated rows.

Called by `serving.hosting` (startup and hot swap) in a worker thread, never on the event loop. Versions are
resolved through the registry port (`ModelRegistry.resolve`, `model_exists`) and loaded through the MLflow
adapter (`MlflowModelRegistry.load_model`: with `--serve-artifacts` the server proxies the artifacts, so no
object-store credentials are needed); serving imports no MLflow and sets no process-wide MLflow state. The
scikit-learn flavor is preferred (one `predict_proba` call gives both the prediction and the class
probabilities); any other model goes through MLflow's generic pyfunc flavour. A version is warmed up with one
prediction before it is declared loaded.

Messages name what is missing (the model, its alias, its version) or that the registry is unreachable,
never more than a clipped caller string. How long an unreachable MLflow takes to fail is bounded by the
entry point (MLflow's HTTP settings); `DetachedLoader` makes a load that still hangs abandonable, so a
stopping process never waits for it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from modelloop.adapters.mlflow_registry import MlflowModelRegistry
from modelloop.contract.errors import ModelloopError, NotFoundError
from modelloop.contract.model_registry import ModelRegistry
from modelloop.contract.profile import OTHER_CATEGORY, CategoricalProfile, ReferenceProfile

from .column_feeder import column_feeder
from .errors import ModelLoadError, NotReadyError, clip
from .fast_input import fitted_order, matrix_feeder, tree_method
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
    #: the version's reference profile as read at load (None: none readable); batch scoring's drift reuses it
    profile: ReferenceProfile | None = field(default=None, repr=False, compare=False)

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

    answer = _fastest_path(model, schema, method, frame, label)
    if classify:
        labels = np.asarray(classes)

        def classify_rows(features: Features) -> Prediction:
            proba = np.asarray(answer(features), dtype=np.float64)
            return labels[np.argmax(proba, axis=1)], proba

        return classify_rows

    def regress(features: Features) -> Prediction:
        out = np.asarray(answer(features)).reshape(features.n_rows, -1)
        if out.shape[1] != 1:
            raise ValueError(f"model gives {out.shape[1]} outputs per row; one is served")
        return out[:, 0], None

    return regress


def _fastest_path(
    model: Any,
    schema: ModelSchema,
    method: Callable[[Any], Any],
    frame: Callable[[Features], Any],
    label: str,
) -> Callable[[Features], Any]:
    """Rows -> the model's raw answer, by the cheapest path that answers exactly as a DataFrame does: a
    numpy matrix (`serving.fast_input`, all-float models; a bare decision tree's own traversal when it answers
    alike), a compiled ColumnTransformer (`serving.column_feeder`, mixed-type pipelines), else the DataFrame
    itself."""
    feed = matrix_feeder(model, schema, method, frame)
    if feed is not None:
        traverse = tree_method(model, method, len(schema.names))
        log.info("%s is fed a numpy matrix (fast path%s)", label, ", tree traversal" if traverse else "")
        answer = traverse or method
        return lambda features: answer(feed(features))
    compiled = None if schema.all_float else column_feeder(model, schema, method, frame)
    if compiled is not None:
        log.info("%s is fed numpy columns through its compiled ColumnTransformer (fast path)", label)
        return compiled
    log.info("%s is fed a DataFrame", label)
    return lambda features: method(frame(features))


def _pyfunc_predictor(model: Any, schema: ModelSchema) -> Callable[[Features], Prediction]:
    def predict(features: Features) -> Prediction:
        out = np.asarray(model.predict(_frame(schema, features)))
        return out.reshape(features.n_rows, -1)[:, 0] if out.ndim > 1 else out, None

    return predict


def resolve_version(registry: ModelRegistry, name: str, ref: str) -> str:
    """A version number from `VERSION` or an alias (`production`, `challenger`, or any other; the role
    aliases fall back to their deprecated stage).

    Raises NotFoundError naming what is missing (the model, or its alias) and UnavailableError when the
    registry cannot be reached."""
    if ref.isdigit():
        return ref
    version = registry.resolve(name, ref)
    if version is not None:
        return version
    if not registry.model_exists(name):
        raise NotFoundError(f"model {clip(name)} is not registered in {registry.where}")
    raise NotFoundError(f"model {clip(name)} has no version with alias {clip(ref)}")


def load_model(tracking_uri: str, name: str, ref: str, *, max_rows: int = 100_000) -> LoadedModel:
    """Load `name` at `ref` (version or alias) from the registry, build its schema, warm it up."""
    registry = MlflowModelRegistry(tracking_uri)
    version = resolve_version(registry, name, ref)
    info = registry.version(name, version)  # NotFoundError naming the model or the version
    artifact = registry.load_model(name, version)
    profile = _profile(registry, name, version) if info.run_id else None
    categories = _categories(profile)
    try:
        if artifact.flavour == "sklearn":
            classes = getattr(artifact.model, "classes_", None)
            schema = ModelSchema.from_signature(
                artifact.signature, classes=None if classes is None else list(classes), categories=categories,
                max_rows=max_rows,
            )  # fmt: skip
            predict = sklearn_predictor(artifact.model, schema, label=f"model {name}/{version}")
            loaded = LoadedModel(name, version, schema, "sklearn", predict, profile)
        else:
            schema = ModelSchema.from_signature(artifact.signature, categories=categories, max_rows=max_rows)
            loaded = LoadedModel(
                name, version, schema, "mlflow_pyfunc", _pyfunc_predictor(artifact.model, schema), profile
            )
    except ModelloopError:
        raise
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


def _profile(registry: ModelRegistry, name: str, version: str) -> ReferenceProfile | None:
    """The version's reference profile; None (logged) when it has none or it cannot be read."""
    try:
        return registry.reference_profile(name, version)
    except ModelloopError:
        log.info(
            "model %s/%s has no readable reference profile; unseen categories are not checked", name, version
        )
        return None


def _categories(profile: ReferenceProfile | None) -> dict[str, frozenset[str]]:
    """Known categories per string column from the version's reference profile, where the profile lists them
    all (a profile that pooled rare categories cannot tell unseen from rare: that column is not checked)."""
    if profile is None:
        return {}
    return {
        column: frozenset(p.frequencies)
        for column, p in profile.features.items()
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
    "resolve_version",
    "sklearn_predictor",
    "warm_up",
]
