"""`ScoringClient`: a blocking gRPC client of one scoring server, and the retry policy callers' channels use.

Sends one 1-D tensor per column in raw little-endian form (BYTES for strings; `_tensors`), asks for
probabilities when told to, and raises a modelloop error for a failed call (`contract.wire.status.error_for`):
UNAVAILABLE, DEADLINE_EXCEEDED and CANCELLED -> UnavailableError, NOT_FOUND -> NotFoundError, INVALID_ARGUMENT
-> InvalidInputError, RESOURCE_EXHAUSTED -> OversizedInputError, FAILED_PRECONDITION -> ModelLoadError.

Inference calls are retried by gRPC itself (a retry policy in the channel's service config, `RETRY_POLICY`)
when the server answers UNAVAILABLE or CANCELLED: that is what a call gets when it races a scoring pod's
graceful shutdown (the server has sent GOAWAY and cancels calls that arrive before the client read it), so
rolling updates and scale-downs cost callers nothing. Scoring is idempotent; admin calls are never retried.
Callers using the generated stubs directly get the same by passing `service_config()` as the channel's
`grpc.service_config` option.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import grpc
import numpy as np

from modelloop.contract.wire._generated.inference import grpc_predict_v2_pb2 as pb
from modelloop.contract.wire._generated.inference import grpc_predict_v2_pb2_grpc as pb_grpc
from modelloop.contract.wire._generated.modelloop.admin.v1 import admin_pb2 as admin_pb
from modelloop.contract.wire._generated.modelloop.admin.v1 import admin_pb2_grpc as admin_grpc
from modelloop.contract.wire.admin import ModelStatus, from_message
from modelloop.contract.wire.names import OIP_SERVICE, PREDICT_OUTPUT, PROBA_OUTPUT, ROUTE_PARAMETER
from modelloop.contract.wire.status import error_for

from ._tensors import build_request, decode_outputs

RETRY_POLICY: dict[str, Any] = {
    "maxAttempts": 4,
    "initialBackoff": "0.05s",
    "maxBackoff": "1s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE", "CANCELLED"],
}

Metadata = tuple[tuple[str, str], ...]


def service_config() -> str:
    """The channel service config (JSON) retrying inference calls with `RETRY_POLICY`."""
    method = {"name": [{"service": OIP_SERVICE}], "retryPolicy": RETRY_POLICY}
    return json.dumps({"methodConfig": [method]})


@dataclass(frozen=True)
class PredictResult:
    """What one predict call gave back: predictions (and probabilities, [rows, classes], when asked for),
    the version that answered, the request id and the route (champion or challenger)."""

    predictions: np.ndarray[Any, Any]
    probabilities: np.ndarray[Any, Any] | None
    model_version: str
    request_id: str
    route: str


class ScoringClient:
    """A blocking client of one scoring server (`host:port`). Thread safe; close it (or use `with`).

    `token` is the callers' bearer token, `admin_token` the distinct credential of the admin calls
    (`load_model`, `unload_model`, `list_models`); the three certificate arguments make the channel TLS
    (mutual when a key and chain are given). `retries=False` leaves out `RETRY_POLICY`."""

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
        self._metadata: Metadata = (("authorization", f"Bearer {token}"),) if token else ()
        # the admin service has its own credential, never the callers' token
        self._admin_metadata: Metadata = (("authorization", f"Bearer {admin_token}"),) if admin_token else ()
        self._inference = pb_grpc.GRPCInferenceServiceStub(self._channel)  # type: ignore[no-untyped-call]
        self._admin = admin_grpc.ModelAdminStub(self._channel)  # type: ignore[no-untyped-call]

    def _call(
        self,
        method: Callable[..., Any],
        request: Any,
        timeout: float,
        metadata: Sequence[tuple[str, str]] | None = None,
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
        response: pb.ModelInferResponse = self._call(self._inference.ModelInfer, request, timeout)
        outputs = decode_outputs(response)
        params = response.parameters
        return PredictResult(
            predictions=outputs[PREDICT_OUTPUT],
            probabilities=outputs.get(PROBA_OUTPUT),
            model_version=response.model_version,
            request_id=response.id,
            route=params[ROUTE_PARAMETER].string_param if ROUTE_PARAMETER in params else "",
        )

    def ready(self, model: str, *, version: str | None = None, timeout: float = 5.0) -> bool:
        """Whether the server answers for `model` (and `version`, when given)."""
        request = pb.ModelReadyRequest(name=model, version=version or "")
        return bool(self._call(self._inference.ModelReady, request, timeout).ready)

    def server_ready(self, *, timeout: float = 5.0) -> bool:
        """Whether the server has loaded and warmed every model it hosts (and is not stopping)."""
        return bool(self._call(self._inference.ServerReady, pb.ServerReadyRequest(), timeout).ready)

    def metadata(
        self, model: str, *, version: str | None = None, timeout: float = 5.0
    ) -> pb.ModelMetadataResponse:
        """The model's ModelMetadataResponse (inputs and outputs from its signature)."""
        request = pb.ModelMetadataRequest(name=model, version=version or "")
        response: pb.ModelMetadataResponse = self._call(self._inference.ModelMetadata, request, timeout)
        return response

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
        response: admin_pb.LoadModelResponse = self._call(
            self._admin.LoadModel, request, timeout, self._admin_metadata
        )
        return from_message(response.model)

    def unload_model(self, model: str, *, role: str = "champion", timeout: float = 30.0) -> None:
        """Stop serving `model` (role champion: the whole model; challenger: only its challenger)."""
        request = admin_pb.UnloadModelRequest(model=model, role=role)
        self._call(self._admin.UnloadModel, request, timeout, self._admin_metadata)

    def list_models(self, *, timeout: float = 5.0) -> list[ModelStatus]:
        """Every model the server hosts."""
        request = admin_pb.ListModelsRequest()
        response: admin_pb.ListModelsResponse = self._call(
            self._admin.ListModels, request, timeout, self._admin_metadata
        )
        return [from_message(m) for m in response.models]

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> ScoringClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


__all__ = ["RETRY_POLICY", "PredictResult", "ScoringClient", "service_config"]
