"""Loading a registered model version from MLflow and predicting on validated rows.

Called by `serving.hosting` (startup and hot swap) in a worker thread, never on the event loop. Models come
from the registry through the tracking server (`models:/NAME/VERSION`; with `--serve-artifacts` the server
proxies the artifacts, so no object-store credentials are needed). The scikit-learn flavor is preferred (one
`predict_proba` call gives both the prediction and the class probabilities); any other model goes through
`mlflow.pyfunc`. A version is warmed up with one prediction before it is declared loaded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from modelloop.errors import ModelloopError, NotFoundError, UnavailableError
from modelloop.registry import ALIAS_FOR_ROLE, REFERENCE_PROFILE_PATH, STAGE_FOR_ROLE, Role

from .errors import ModelLoadError
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


def resolve_version(client: Any, name: str, ref: str) -> str:
    """A version number from `VERSION` or an alias (`production`, `challenger`, or any other)."""
    if ref.isdigit():
        return ref
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(name, ref).version)
    except MlflowException as exc:
        _raise_for(exc, f"model {name} alias {ref}")
    # older registries: the deprecated stage of the same role
    roles = {alias: role for role, alias in ALIAS_FOR_ROLE.items()}
    role = roles.get(ref)
    if role is not None:
        latest = client.get_latest_versions(name, stages=[STAGE_FOR_ROLE[Role(role)]])
        if latest:
            return str(latest[0].version)
    raise NotFoundError(f"model {name} has no version with alias {ref}")


def _raise_for(exc: Exception, what: str) -> None:
    code = str(getattr(exc, "error_code", ""))
    if code in {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"}:
        return  # not found: the caller decides
    raise UnavailableError(
        f"MLflow registry unreachable while resolving {what} ({code or type(exc).__name__})"
    )


def load_model(tracking_uri: str, name: str, ref: str, *, max_rows: int = 100_000) -> LoadedModel:
    """Load `name` at `ref` (version or alias) from the registry, build its schema, warm it up."""
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    version = resolve_version(client, name, ref)
    try:
        mv = client.get_model_version(name, version)
    except MlflowException as exc:
        _raise_for(exc, f"model {name} version {version}")
        raise NotFoundError(f"model {name} has no version {version}") from None
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
        _raise_for(exc, f"model {name} version {version}")
        log.warning("model %s/%s cannot be loaded", name, version, exc_info=True)
        raise ModelLoadError(
            f"model {name} version {version} cannot be loaded ({type(exc).__name__})"
        ) from None
    except Exception as exc:
        log.warning("model %s/%s cannot be loaded", name, version, exc_info=True)
        raise ModelLoadError(
            f"model {name} version {version} cannot be loaded ({type(exc).__name__})"
        ) from None
    warm_up(loaded)
    log.info("model %s/%s loaded (%s, %d columns)", name, version, loaded.platform, len(schema.columns))
    return loaded


def _categories(run_id: str) -> dict[str, frozenset[str]]:
    """Known categories per string column from the run's reference profile, where the profile lists them
    all (a profile that pooled rare categories cannot tell unseen from rare: that column is not checked)."""
    import mlflow

    from modelloop.profile import OTHER_CATEGORY, CategoricalProfile, ReferenceProfile

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


__all__ = ["LoadedModel", "Prediction", "load_model", "resolve_version", "sklearn_predictor", "warm_up"]
