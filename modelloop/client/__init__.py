"""The Python client of modelloop's scoring servers: the one documented path for callers.

    from modelloop.client import ScoringClient

    with ScoringClient("127.0.0.1:8081", token=...) as client:
        result = client.predict("churn", frame, probabilities=True, request_id="r-1")
        result.predictions, result.probabilities, result.model_version, result.route

A service that installs modelloop to score imports this package and nothing else. It loads the wire
(`modelloop.contract.wire`: the generated stubs, the codec, the status-code mapping), grpc, protobuf and
numpy; never the server (`modelloop.serving`), deploy, training, monitoring, MLflow or scikit-learn (a unit
test checks it). A request carries one 1-D tensor per column (shape `[rows]`) in raw contents: the form every
model accepts whatever its column types, and the cheapest one that stays correct when a new version reorders
its columns (each value is bound to its column by name). The server decodes it in bulk, within ~15 % of the
server's cost of one `[rows, columns]` FP64 matrix (bench/serving_cpu.py), which only all-numeric models take
and which is bound to the signature's column order, so it is not sent. A failed call
raises one of the errors below, mapped from its gRPC status code; inference calls are retried on UNAVAILABLE
and CANCELLED (`RETRY_POLICY`; `service_config()` gives the same to a channel of the generated stubs).

    ScoringClient      predict, ready, server_ready, metadata; admin: load_model, unload_model, list_models
    PredictResult      what predict gives back
    ModelStatus        what load_model and list_models give back
    build_request      the ModelInferRequest predict sends, for callers of the generated stubs
    decode_outputs     a ModelInferResponse's outputs as numpy arrays

    ModelloopError                      any failed call (the message is safe to show)
    ├── InvalidInputError               INVALID_ARGUMENT: the data is wrong (names the column)
    │   └── OversizedInputError         RESOURCE_EXHAUSTED: too many rows or bytes
    ├── NotFoundError                   NOT_FOUND: no such model or version on this server
    ├── UnavailableError                UNAVAILABLE, DEADLINE_EXCEEDED: retry later
    ├── ModelLoadError                  FAILED_PRECONDITION: load_model could not load or warm the version
    └── ConfigError                     UNAUTHENTICATED, PERMISSION_DENIED: the token is missing or wrong
"""

from __future__ import annotations

from modelloop.contract.errors import (
    ConfigError,
    InvalidInputError,
    ModelLoadError,
    ModelloopError,
    NotFoundError,
    UnavailableError,
)
from modelloop.contract.wire.admin import ModelStatus
from modelloop.contract.wire.errors import OversizedInputError

from ._client import RETRY_POLICY, PredictResult, ScoringClient, service_config
from ._tensors import build_request, decode_outputs

__all__ = [
    "RETRY_POLICY",
    "ConfigError",
    "InvalidInputError",
    "ModelLoadError",
    "ModelStatus",
    "ModelloopError",
    "NotFoundError",
    "OversizedInputError",
    "PredictResult",
    "ScoringClient",
    "UnavailableError",
    "build_request",
    "decode_outputs",
    "service_config",
]
