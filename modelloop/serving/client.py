"""The Python client of the scoring server: predictions from a pandas DataFrame or a list of dicts.

Used by internal services, by the deployment controller's `local` target (readiness and hot swap through
`load_model`) and by the tests. Sends one tensor per column in raw little-endian form (BYTES for strings),
asks for probabilities when told to, and maps gRPC status codes to `contract.errors` (`serving.status`):
UNAVAILABLE and DEADLINE_EXCEEDED -> UnavailableError, NOT_FOUND -> NotFoundError, INVALID_ARGUMENT ->
InvalidInputError, RESOURCE_EXHAUSTED -> OversizedInputError, FAILED_PRECONDITION -> ModelLoadError.

Inference calls are retried by gRPC itself (a retry policy in the channel's service config, `RETRY_POLICY`)
when the server answers UNAVAILABLE or CANCELLED: that is what a call gets when it races a scoring pod's
graceful shutdown (the server has sent GOAWAY and cancels calls that arrive before the client read it), so
rolling updates and scale-downs cost callers nothing. Scoring is idempotent; admin calls are never retried.
Callers using the generated stubs directly get the same by passing `service_config()` as the channel's
`grpc.service_config` option.

    with ScoringClient("127.0.0.1:8081") as client:
        result = client.predict("churn", frame, probabilities=True, request_id="r-1")
        result.predictions, result.probabilities, result.model_version
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import grpc
import numpy as np

from modelloop.contract.errors import InvalidInputError, ModelloopError
from modelloop.contract.wire._generated.inference import grpc_predict_v2_pb2 as pb
from modelloop.contract.wire._generated.inference import grpc_predict_v2_pb2_grpc as pb_grpc
from modelloop.contract.wire._generated.modelloop.admin.v1 import admin_pb2 as admin_pb
from modelloop.contract.wire._generated.modelloop.admin.v1 import admin_pb2_grpc as admin_grpc

from .codec import decode_raw, encode_raw, numpy_datatype
from .grpc_server import PREDICT_OUTPUT, PROBA_OUTPUT
from .hosting import ModelStatus
from .status import error_for

RETRY_POLICY: dict[str, Any] = {
    "maxAttempts": 4,
    "initialBackoff": "0.05s",
    "maxBackoff": "1s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE", "CANCELLED"],
}


def service_config() -> str:
    """The channel service config (JSON) retrying inference calls with `RETRY_POLICY`."""
    method = {"name": [{"service": "inference.GRPCInferenceService"}], "retryPolicy": RETRY_POLICY}
    return json.dumps({"methodConfig": [method]})


@dataclass(frozen=True)
class PredictResult:
    """What one predict call gave back."""

    predictions: np.ndarray[Any, Any]
    probabilities: np.ndarray[Any, Any] | None
    model_version: str
    request_id: str
    route: str


class ScoringClient:
    """A blocking client of one scoring server (`host:port`). Thread safe; close it (or use `with`)."""

    def __init__(
        self,
        target: str,
        *,
        token: str | None = None,
        root_certificates: bytes | None = None,
        private_key: bytes | None = None,
        certificate_chain: bytes | None = None,
        max_message_bytes: int = 16 * 1024 * 1024,
        retries: bool = True,
        admin_token: str | None = None,
    ) -> None:
        options: list[tuple[str, Any]] = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ]
        if retries:
            options += [("grpc.enable_retries", 1), ("grpc.service_config", service_config())]
        if root_certificates is not None:
            creds = grpc.ssl_channel_credentials(root_certificates, private_key, certificate_chain)
            self._channel = grpc.secure_channel(target, creds, options=options)
        else:
            self._channel = grpc.insecure_channel(target, options=options)
        self._metadata: tuple[tuple[str, str], ...] = (("authorization", f"Bearer {token}"),) if token else ()
        # the admin service has its own credential, never the callers' token
        self._admin_metadata: tuple[tuple[str, str], ...] = (
            (("authorization", f"Bearer {admin_token}"),) if admin_token else ()
        )
        self._inference = pb_grpc.GRPCInferenceServiceStub(self._channel)  # type: ignore[no-untyped-call]
        self._admin = admin_grpc.ModelAdminStub(self._channel)  # type: ignore[no-untyped-call]

    def _call(
        self, method: Any, request: Any, timeout: float, metadata: Sequence[tuple[str, str]] | None = None
    ) -> Any:
        try:
            return method(request, timeout=timeout, metadata=self._metadata if metadata is None else metadata)
        except grpc.RpcError as exc:
            raise error_for(exc.code(), exc.details()) from None

    # inference --------------------------------------------------------------------------------------------

    def predict(
        self,
        model: str,
        data: Any,
        *,
        probabilities: bool = False,
        version: str | None = None,
        request_id: str | None = None,
        timeout: float = 10.0,
    ) -> PredictResult:
        """Score the rows of `data` (a DataFrame or a list of dicts, one per row)."""
        request = build_request(
            model, data, probabilities=probabilities, version=version, request_id=request_id
        )
        response = self._call(self._inference.ModelInfer, request, timeout)
        outputs = decode_outputs(response)
        return PredictResult(
            predictions=outputs[PREDICT_OUTPUT],
            probabilities=outputs.get(PROBA_OUTPUT),
            model_version=response.model_version,
            request_id=response.id,
            route=response.parameters["route"].string_param if "route" in response.parameters else "",
        )

    def ready(self, model: str, *, version: str | None = None, timeout: float = 5.0) -> bool:
        """Whether the server answers for `model` (and `version`, when given)."""
        request = pb.ModelReadyRequest(name=model, version=version or "")
        return bool(self._call(self._inference.ModelReady, request, timeout).ready)

    def server_ready(self, *, timeout: float = 5.0) -> bool:
        return bool(self._call(self._inference.ServerReady, pb.ServerReadyRequest(), timeout).ready)

    def metadata(self, model: str, *, version: str | None = None, timeout: float = 5.0) -> Any:
        """The model's ModelMetadataResponse (inputs and outputs from its signature)."""
        return self._call(
            self._inference.ModelMetadata, pb.ModelMetadataRequest(name=model, version=version or ""), timeout
        )

    # admin ------------------------------------------------------------------------------------------------

    def load_model(
        self,
        model: str,
        version: str,
        *,
        role: str = "champion",
        mode: str | None = None,
        canary_share: float | None = None,
        timeout: float = 120.0,
    ) -> ModelStatus:
        """Load `version` beside what serves, warm it, switch to it (hot swap); returns the model's status."""
        request = admin_pb.LoadModelRequest(
            model=model, version=str(version), role=role, mode=mode or "", canary_share=canary_share or 0.0
        )
        return _status(self._call(self._admin.LoadModel, request, timeout, self._admin_metadata).model)

    def unload_model(self, model: str, *, role: str = "champion", timeout: float = 30.0) -> None:
        request = admin_pb.UnloadModelRequest(model=model, role=role)
        self._call(self._admin.UnloadModel, request, timeout, self._admin_metadata)

    def list_models(self, *, timeout: float = 5.0) -> list[ModelStatus]:
        return [
            _status(m)
            for m in self._call(
                self._admin.ListModels, admin_pb.ListModelsRequest(), timeout, self._admin_metadata
            ).models
        ]

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> ScoringClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _status(m: Any) -> ModelStatus:
    return ModelStatus(
        name=m.name,
        champion_version=m.champion_version,
        challenger_version=m.challenger_version or None,
        mode=m.mode or None,
        canary_share=m.canary_share,
        ready=m.ready,
    )


def _columns(data: Any) -> dict[str, np.ndarray[Any, Any]]:
    if isinstance(data, Mapping):
        raise InvalidInputError("data must be a DataFrame or a list of dicts (one per row), not one dict")
    if isinstance(data, list | tuple):
        if not data:
            raise InvalidInputError("data has no rows")
        names = list(dict.fromkeys(k for row in data for k in row))
        return {n: _array([row.get(n) for row in data]) for n in names}
    if hasattr(data, "columns") and hasattr(data, "to_numpy"):
        return {str(c): _array(data[c].to_numpy()) for c in data.columns}
    raise InvalidInputError("data must be a pandas DataFrame or a list of dicts")


def _array(values: Any) -> np.ndarray[Any, Any]:
    arr = np.asarray(values)
    if arr.dtype.kind in "fiub":
        return arr
    if arr.dtype.kind in "US":
        return arr.astype(object)
    if all(v is None or isinstance(v, bool) for v in arr) and any(v is not None for v in arr):
        if any(v is None for v in arr):
            return arr.astype(object)  # booleans with missing values cannot be sent
        return arr.astype(bool)
    if all(v is None or isinstance(v, int | float | np.number) for v in arr):
        return np.array([np.nan if v is None else v for v in arr], dtype=np.float64)
    return np.array([v if v is None or isinstance(v, bytes) else str(v) for v in arr], dtype=object)


def build_request(
    model: str,
    data: Any,
    *,
    probabilities: bool = False,
    version: str | None = None,
    request_id: str | None = None,
) -> Any:
    """A raw-encoded ModelInferRequest with one tensor per column."""
    request = pb.ModelInferRequest(model_name=model, model_version=version or "", id=request_id or "")
    for name, values in _columns(data).items():
        if values.dtype == object and any(v is None for v in values):
            raise InvalidInputError(
                f"column '{name}' has missing values the protocol cannot carry; drop the column"
            )
        datatype = numpy_datatype(values)
        request.inputs.add(name=name, datatype=datatype, shape=[len(values)])
        request.raw_input_contents.append(encode_raw(values, datatype))
    request.outputs.add(name=PREDICT_OUTPUT)
    if probabilities:
        request.outputs.add(name=PROBA_OUTPUT)
    return request


def decode_outputs(response: Any) -> dict[str, np.ndarray[Any, Any]]:
    """Output tensors of a ModelInferResponse as numpy arrays (raw or typed contents)."""
    from .codec import DATATYPES

    out = {}
    for i, tensor in enumerate(response.outputs):
        shape = tuple(int(d) for d in tensor.shape)
        size = int(np.prod(shape))
        if response.raw_output_contents:
            array = decode_raw(tensor.name, tensor.datatype, response.raw_output_contents[i], size)
        else:
            values = getattr(tensor.contents, DATATYPES[tensor.datatype][1])
            array = np.array(list(values), dtype=object if tensor.datatype == "BYTES" else None)
        if tensor.datatype == "BYTES":
            array = np.array([v.decode() for v in array], dtype=object)
        out[tensor.name] = array.reshape(shape)
    return out


__all__ = [
    "RETRY_POLICY",
    "ModelloopError",
    "PredictResult",
    "ScoringClient",
    "build_request",
    "decode_outputs",
    "service_config",
]
