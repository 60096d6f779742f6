"""Loading a registered model version out of MLflow, for callers that must not import MLflow themselves.

Called through `MlflowModelRegistry.load_model` by serving (`serving.model_host`) and by the promotion gate
(`training.gate`). The version's artifacts are downloaded into a temporary folder with the registry's own
URIs (no process-wide tracking URI), then loaded from there: the scikit-learn flavour when the model has one
(serving predicts with `predict_proba` on it); else the LightGBM, XGBoost or CatBoost flavour when the model
has one and it gives back a scikit-learn-API estimator (loaded as "sklearn": same serving path); else the
generic `pyfunc` flavour. MLflow's flavour code
applies its own trust rules (skops trusted types recorded with the model). The signature comes back as a
`ModelSignature`, plain data with the shape of MLflow's (`inputs.inputs[i].name/.type/.required`,
`inputs.has_input_names()`) so `serving.schema.ModelSchema.from_signature` reads it unchanged.

Errors: the registry unreachable or refusing -> UnavailableError / RegistryRefusedError; anything else (the
artifacts missing, a broken MLmodel, no such flavour, an untrusted type) -> ModelLoadError, whose `cause`
names the underlying exception type.
"""

from __future__ import annotations

import importlib
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from modelloop.contract.errors import ModelLoadError, clip

from . import mlflow_errors

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.models.signature import ModelSignature as MlflowSignature
    from mlflow.types.schema import Schema

log = logging.getLogger(__name__)

#: Flavours whose loader returns an estimator with scikit-learn's API when the model was logged as one;
#: such a model is served like a scikit-learn one (probabilities, the matrix fast path where it fits).
NATIVE_FLAVOURS = ("lightgbm", "xgboost", "catboost")


@dataclass(frozen=True)
class ColumnSpec:
    """One input or output of a signature.

    `type` is MLflow's column type name ("double", "long", "string", ...) for a column, the numpy dtype of a
    tensor, or None when the signature gives none."""

    name: str | None
    type: str | np.dtype[Any] | None
    required: bool = True


@dataclass(frozen=True)
class Specs:
    """The inputs (or the outputs) of a signature, in order."""

    inputs: tuple[ColumnSpec, ...]

    def has_input_names(self) -> bool:
        return bool(self.inputs) and self.inputs[0].name is not None


@dataclass(frozen=True)
class ModelSignature:
    """What a model takes and gives, without MLflow's classes (None: the signature does not say)."""

    inputs: Specs | None
    outputs: Specs | None


@dataclass(frozen=True)
class LoadedArtifact:
    """A loaded model version: the model object, which flavour it was loaded with ("sklearn": any estimator
    with scikit-learn's API, whichever MLflow flavour loaded it), and its signature."""

    model: object
    flavour: Literal["sklearn", "pyfunc"]
    signature: ModelSignature | None


def _specs(schema: Schema | None) -> Specs | None:
    if schema is None:
        return None
    out = []
    for spec in schema.inputs:
        raw = spec.type
        kind = raw if isinstance(raw, np.dtype) or raw is None else str(getattr(raw, "name", raw))
        out.append(ColumnSpec(spec.name, kind, bool(getattr(spec, "required", True))))
    return Specs(tuple(out))


def plain_signature(signature: MlflowSignature | None) -> ModelSignature | None:
    """MLflow's signature as plain data."""
    if signature is None:
        return None
    return ModelSignature(inputs=_specs(signature.inputs), outputs=_specs(signature.outputs))


def load_registered_model(
    client: MlflowClient,
    model: str,
    version: str,
    *,
    registry_uri: str,
    where: str,
    sklearn_only: bool = False,
) -> LoadedArtifact:
    """Download and load `model` version `version` (it must exist: check with the registry's `version`)
    through `client` (built with `registry_uri`).

    `sklearn_only=True` (the gate) refuses a model without the scikit-learn flavour (ModelLoadError)."""
    folder = _download(client, model, version, registry_uri=registry_uri, where=where)
    keep = False
    try:
        loaded = _load_local(folder, sklearn_only=sklearn_only)
        keep = loaded.flavour == "pyfunc"  # a pyfunc model may read its files lazily: MLflow keeps them too
        return loaded
    except Exception as exc:
        log.warning("model %s/%s cannot be loaded", model, version, exc_info=True)
        raise _unloadable(model, version, exc) from None
    finally:
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)


def _download(client: MlflowClient, model: str, version: str, *, registry_uri: str, where: str) -> Path:
    """The version's artifacts in a new local folder. Not through a `models:/NAME/VERSION` URI: MLflow
    resolves those with the process-wide registry URI, whatever URI it is given; the version's download URI
    (and, in MLflow 3, its logged model's artifact location) is resolved with `client` instead."""
    import mlflow.artifacts

    folder = tempfile.mkdtemp(prefix="modelloop-model-")
    try:
        uri = client.get_model_version_download_uri(model, version)
        if uri.startswith("models:/"):  # a logged model (MLflow 3), by id
            uri = client.get_logged_model(uri.removeprefix("models:/").strip("/")).artifact_location
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=uri, dst_path=folder, tracking_uri=client.tracking_uri, registry_uri=registry_uri
        )
    except Exception as exc:
        shutil.rmtree(folder, ignore_errors=True)
        kind = mlflow_errors.kind_of(exc, lookup=True)
        if kind in (mlflow_errors.Kind.UNAVAILABLE, mlflow_errors.Kind.REFUSED):
            doing = f"loading {clip(model)}/{clip(version)}"
            raise mlflow_errors.classify(exc, doing, where=where, lookup=True) from None
        log.warning("model %s/%s cannot be downloaded", model, version, exc_info=True)
        raise _unloadable(model, version, exc) from None
    return Path(local)


def _load_local(folder: Path, *, sklearn_only: bool) -> LoadedArtifact:
    from mlflow.models import Model

    meta = Model.load(str(folder / "MLmodel"))
    signature = plain_signature(meta.signature)
    if "sklearn" not in meta.flavors:
        for flavour in NATIVE_FLAVOURS:
            if flavour in meta.flavors:
                # the flavour's own loader gives back its scikit-learn-API estimator (LGBMClassifier, ...)
                model = importlib.import_module(f"mlflow.{flavour}").load_model(str(folder))
                if all(callable(getattr(model, m, None)) for m in ("predict", "get_params")):
                    return LoadedArtifact(model, "sklearn", signature)
    if sklearn_only or "sklearn" in meta.flavors:
        import mlflow.sklearn

        return LoadedArtifact(mlflow.sklearn.load_model(str(folder)), "sklearn", signature)
    import mlflow.pyfunc

    return LoadedArtifact(mlflow.pyfunc.load_model(str(folder)), "pyfunc", signature)


def _unloadable(model: str, version: str, exc: BaseException) -> ModelLoadError:
    cause = type(exc).__name__
    return ModelLoadError(
        f"model {clip(model)} version {clip(version)} cannot be loaded ({cause})", cause=cause
    )


__all__ = [
    "ColumnSpec",
    "LoadedArtifact",
    "ModelSignature",
    "Specs",
    "load_registered_model",
    "plain_signature",
]
