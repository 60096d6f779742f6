# ruff: noqa: N802  (servicer method names are fixed by the protos)
"""The gRPC adapter: the Open Inference Protocol v2 service, the admin service, health, reflection, the
bearer-token interceptor, and the grpc.aio server that carries them.

The admin service (hot swap, unload, list) is served only when the server is given an admin token, and
only to calls carrying that token: it is distinct from the callers' token, which never opens it. Whoever
starts a server for hot swap (the local target) makes that token; Kubernetes scoring pods pin their version
in the pod spec and never serve the admin service.

Created and started by `serving.app`; tests build it directly. Servicers only convert messages (the
generated `pb2` types of `contract.wire`) to calls on the core (`serving.core`, `serving.hosting`) and back;
every method that can fail goes through `serving.status.maps_errors`, which turns errors into status codes.
`ModelInfer` hands the core the request's inputs undecoded (`serving.codec.OipInputs`): they are decoded
against the schema of the version that answers, in bulk once their structure is known.
The names callers rely on (services, outputs, headers) are the wire's (`contract.wire.names`).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from prometheus_client import Counter, Histogram

from modelloop.contract.errors import InvalidInputError
from modelloop.contract.registry import Role
from modelloop.contract.wire._generated.inference import grpc_predict_v2_pb2 as pb
from modelloop.contract.wire._generated.inference import grpc_predict_v2_pb2_grpc as pb_grpc
from modelloop.contract.wire._generated.modelloop.admin.v1 import admin_pb2 as admin_pb
from modelloop.contract.wire._generated.modelloop.admin.v1 import admin_pb2_grpc as admin_grpc
from modelloop.contract.wire.admin import to_message
from modelloop.contract.wire.codec import encode_raw, fill_contents, numpy_datatype
from modelloop.contract.wire.names import (
    ADMIN_SERVICE,
    OIP_SERVICE,
    OUTPUTS,
    PREDICT_OUTPUT,
    PROBA_OUTPUT,
    REQUEST_ID_HEADER,
    ROUTE_PARAMETER,
)

from .codec import OipInputs
from .core import InferenceCore, InferenceResult
from .errors import NotReadyError, clip_names
from .hosting import ModelAdmin, ModelDescription, ModelHost
from .status import code_for, maps_errors

log = logging.getLogger(__name__)

SERVER_NAME = "modelloop"
#: methods reachable without the bearer token (Kubernetes' gRPC probe cannot send one)
OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")

Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("modelloop")
    except PackageNotFoundError:
        return "0"


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """`inference.GRPCInferenceService` over the core."""

    def __init__(self, core: InferenceCore, server: ScoringServer) -> None:
        self.core = core
        self.host = core.host
        self.server = server
        self.metrics = core.metrics
        self._server_version = _version()
        # metric children by label values, looked up once (labels() costs a lock and a tuple per call);
        # bounded: model labels are hosted names or "unknown", versions only served ones
        self._request_counters: dict[tuple[str, str, str], Counter] = {}
        self._latency_histograms: dict[str, Histogram] = {}

    async def ServerLive(self, request: pb.ServerLiveRequest, context: Context) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: pb.ServerReadyRequest, context: Context) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.server.serving)

    @maps_errors
    async def ModelReady(self, request: pb.ModelReadyRequest, context: Context) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(
            ready=self.server.serving and self.host.ready(request.name, request.version)
        )

    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: Context
    ) -> pb.ServerMetadataResponse:
        extensions = ["model_admin"] if self.server.options.admin_token else []
        return pb.ServerMetadataResponse(
            name=SERVER_NAME, version=self._server_version, extensions=extensions
        )

    @maps_errors
    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: Context
    ) -> pb.ModelMetadataResponse:
        return _metadata(self.host.describe(request.name, request.version))

    @maps_errors
    async def ModelInfer(self, request: pb.ModelInferRequest, context: Context) -> pb.ModelInferResponse:
        started = time.perf_counter()
        model = request.model_name
        label = model if self.host.has(model) else "unknown"
        version, code = request.model_version, grpc.StatusCode.OK
        try:
            if not self.server.serving:
                raise NotReadyError("the scoring server is not ready")
            outputs = _requested_outputs(request)
            request_id = request.id or _metadata_value(context, REQUEST_ID_HEADER)
            result = await self.core.infer(
                model, OipInputs(request), version=version, request_id=request_id, started=started
            )
            version = result.version
            return _response(result, outputs, raw=len(request.raw_input_contents) > 0)
        except (asyncio.CancelledError, Exception) as exc:
            code = code_for(exc)  # the code `maps_errors` answers with (CANCELLED: the caller went away)
            raise
        finally:
            # counted before the caller can see the answer (a scrape right after a call includes it)
            self._count(label, version, code, started)

    def _count(self, label: str, version: str, code: grpc.StatusCode, started: float) -> None:
        # a version label only for a version served here: callers' strings must not mint new series
        if code != grpc.StatusCode.OK and not (version and self.host.ready(label, version)):
            version = ""
        key = (label, version, code.name)
        counter = self._request_counters.get(key)
        if counter is None:
            counter = self._request_counters[key] = self.metrics.requests.labels(*key)
        counter.inc()
        latency = self._latency_histograms.get(label)
        if latency is None:
            latency = self._latency_histograms[label] = self.metrics.latency.labels(label)
        latency.observe(time.perf_counter() - started)


def _metadata(described: ModelDescription) -> pb.ModelMetadataResponse:
    schema = described.model.schema
    tm = pb.ModelMetadataResponse.TensorMetadata
    outputs = [tm(name=PREDICT_OUTPUT, datatype=schema.prediction_datatype, shape=[-1])]
    if schema.classes is not None:
        outputs.append(tm(name=PROBA_OUTPUT, datatype="FP64", shape=[-1, len(schema.classes)]))
    return pb.ModelMetadataResponse(
        name=described.name,
        versions=list(described.versions),
        platform=described.model.platform,
        inputs=[tm(name=c.name, datatype=c.datatype, shape=[-1]) for c in schema.columns],
        outputs=outputs,
    )


def _metadata_value(context: Context, key: str) -> str:
    for k, v in context.invocation_metadata() or ():
        if k == key:
            return str(v)
    return ""


def _requested_outputs(request: pb.ModelInferRequest) -> list[str]:
    if not request.outputs:
        return [PREDICT_OUTPUT]
    names = [o.name for o in request.outputs]
    unknown = [n for n in names if n not in OUTPUTS]
    if unknown:
        raise InvalidInputError(
            f"unknown output(s) {clip_names(unknown)}; outputs are {PREDICT_OUTPUT}, {PROBA_OUTPUT}"
        )
    return names


def _response(result: InferenceResult, outputs: Sequence[str], *, raw: bool) -> pb.ModelInferResponse:
    response = pb.ModelInferResponse(
        model_name=result.model, model_version=result.version, id=result.request_id
    )
    response.parameters[ROUTE_PARAMETER].string_param = str(result.route)
    for name in outputs:
        if name == PREDICT_OUTPUT:
            array = result.predictions
        else:
            if result.probabilities is None:
                raise InvalidInputError(f"model {result.model} gives no class probabilities ({PROBA_OUTPUT})")
            array = result.probabilities
        datatype = numpy_datatype(array)
        tensor = response.outputs.add(name=name, datatype=datatype, shape=list(array.shape))
        if raw:
            response.raw_output_contents.append(encode_raw(array, datatype))
        else:
            fill_contents(tensor.contents, array, datatype)
    return response


def _role(value: str) -> Role:
    try:
        return Role(value or "champion")
    except ValueError:
        raise InvalidInputError("role must be champion or challenger") from None


class AdminServicer(admin_grpc.ModelAdminServicer):
    """`modelloop.admin.v1.ModelAdmin`: hot swap and challengers. Loads and unloads go through `admin`: this
    process's host, or with several workers every worker's (the call returns once all serve the outcome)."""

    def __init__(self, host: ModelHost, server: ScoringServer, admin: ModelAdmin | None = None) -> None:
        self.host = host
        self.server = server
        self.admin: ModelAdmin = admin or host

    @maps_errors
    async def LoadModel(
        self, request: admin_pb.LoadModelRequest, context: Context
    ) -> admin_pb.LoadModelResponse:
        if not request.model or not request.version:
            raise InvalidInputError("LoadModel needs a model and a version")
        role = _role(request.role)
        status = await self.admin.load(
            request.model,
            request.version,
            role=role,
            mode=request.mode or None,
            canary_share=request.canary_share if request.mode == "canary" else None,
        )
        await self.server.mark(request.model, serving=True)
        return admin_pb.LoadModelResponse(model=to_message(status))

    @maps_errors
    async def UnloadModel(
        self, request: admin_pb.UnloadModelRequest, context: Context
    ) -> admin_pb.UnloadModelResponse:
        role = _role(request.role)
        await self.admin.unload(request.model, role=role)
        if role == Role.CHAMPION:
            await self.server.mark(request.model, serving=False)
        return admin_pb.UnloadModelResponse()

    @maps_errors
    async def ListModels(
        self, request: admin_pb.ListModelsRequest, context: Context
    ) -> admin_pb.ListModelsResponse:
        return admin_pb.ListModelsResponse(models=[to_message(s) for s in self.host.list()])


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Requires `authorization: Bearer <token>` (constant-time comparison): the callers' `token` on every
    call but health and reflection (none when None), and the distinct `admin_token` on the admin service
    (the callers' token never opens it)."""

    def __init__(self, token: str | None, admin_token: str | None = None) -> None:
        self._expected = f"Bearer {token}".encode() if token else None
        self._admin = f"Bearer {admin_token}".encode() if admin_token else None

        async def deny(request: Any, context: Any) -> Any:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")

        self._deny = grpc.unary_unary_rpc_method_handler(deny)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = details.method or ""
        if method.startswith(OPEN_PREFIXES):
            return await continuation(details)
        expected = self._admin if method.startswith(f"/{ADMIN_SERVICE}/") else self._expected
        if expected is None:
            return await continuation(details)
        given = b""
        for key, value in details.invocation_metadata or ():
            if key == "authorization":
                given = value.encode() if isinstance(value, str) else bytes(value)
        if hmac.compare_digest(given, expected):
            return await continuation(details)
        return self._deny


@dataclass(frozen=True)
class TlsConfig:
    cert_chain: bytes
    private_key: bytes
    client_ca: bytes | None = None  # set: mutual TLS (clients must present a certificate)


@dataclass(frozen=True)
class ServerOptions:
    token: str | None = None  # what callers must send (None: no caller authentication)
    admin_token: str | None = None  # None: no admin service at all; set: the only credential opening it
    reflection: bool = False
    max_message_bytes: int = 16 * 1024 * 1024
    max_concurrent_rpcs: int | None = 4096
    max_connection_age_ms: int = 300_000
    max_connection_age_grace_ms: int = 30_000
    tls: TlsConfig | None = None
    reuse_port: bool = False  # several worker processes listen on one port (SO_REUSEPORT)


class ScoringServer:
    """The grpc.aio server with every service; health is NOT_SERVING until `set_serving()`, and with several
    worker processes also until `set_peers_ready(True)` (every worker serves)."""

    def __init__(
        self,
        core: InferenceCore,
        options: ServerOptions = ServerOptions(),
        *,
        admin: ModelAdmin | None = None,
        peers: bool = False,
    ) -> None:
        self.core = core
        self.options = options
        self.serving = False
        self._peers_ready = not peers  # one of several workers: wait for `set_peers_ready(True)`
        self.health = health.aio.HealthServicer()
        # what health was told, by service (grpc's servicer has no public reader; it starts with "" SERVING
        # and ignores every `set` after `enter_graceful_shutdown`)
        self._health: dict[str, int] = {"": health_pb2.HealthCheckResponse.SERVING}
        self._health_final = False
        self.port = 0
        guarded = options.token or options.admin_token
        interceptors = [BearerTokenInterceptor(options.token, options.admin_token)] if guarded else []
        self.server = grpc.aio.server(
            interceptors=interceptors,
            maximum_concurrent_rpcs=options.max_concurrent_rpcs,
            options=[
                ("grpc.max_receive_message_length", options.max_message_bytes),
                ("grpc.max_send_message_length", options.max_message_bytes),
                ("grpc.max_connection_age_ms", options.max_connection_age_ms),
                ("grpc.max_connection_age_grace_ms", options.max_connection_age_grace_ms),
                ("grpc.so_reuseport", 1 if options.reuse_port else 0),
            ],
        )
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(core, self), self.server)  # type: ignore[no-untyped-call]
        services = [OIP_SERVICE, health.SERVICE_NAME]
        if options.admin_token:  # hot swap: only for whoever started the server with its own credential
            admin_grpc.add_ModelAdminServicer_to_server(AdminServicer(core.host, self, admin), self.server)  # type: ignore[no-untyped-call]
            services.append(ADMIN_SERVICE)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        if options.reflection:
            from grpc_reflection.v1alpha import reflection

            reflection.enable_server_reflection((*services, reflection.SERVICE_NAME), self.server)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Bind and start; health says NOT_SERVING until `set_serving()`. Returns the bound port."""
        for service in ("", OIP_SERVICE):
            await self._set_health(service, health_pb2.HealthCheckResponse.NOT_SERVING)
        address = f"{host}:{port}"
        tls = self.options.tls
        if tls is None:
            self.port = self.server.add_insecure_port(address)
        else:
            credentials = grpc.ssl_server_credentials(
                [(tls.private_key, tls.cert_chain)],
                root_certificates=tls.client_ca,
                require_client_auth=tls.client_ca is not None,
            )
            self.port = self.server.add_secure_port(address, credentials)
        await self.server.start()
        return self.port

    async def mark(self, model: str, *, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        await self._set_health(model, status)

    async def set_serving(self) -> None:
        """Every hosted model is loaded and warm: health SERVING for the server and each model."""
        for name in self.core.host.names():
            await self.mark(name, serving=True)
        self.serving = True
        await self._set_server_health()

    async def set_peers_ready(self, ready: bool) -> None:
        """With several workers: whether every worker serves; health of the server says SERVING only then."""
        if ready != self._peers_ready:
            self._peers_ready = ready
            await self._set_server_health()

    async def _set_server_health(self) -> None:
        serving = self.serving and self._peers_ready
        status = (
            health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for service in ("", OIP_SERVICE):
            await self._set_health(service, status)

    async def stop(self, grace: float) -> None:
        """Health NOT_SERVING, refuse new calls, let in-flight calls finish within `grace` seconds."""
        self.serving = False
        await self.health.enter_graceful_shutdown()
        self._health_final = True
        self._health = dict.fromkeys(self._health, health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.server.stop(grace)

    async def wait(self) -> None:
        await self.server.wait_for_termination()

    async def _set_health(self, service: str, status: int) -> None:
        await self.health.set(service, status)
        if not self._health_final:
            self._health[service] = status

    def health_status(self) -> dict[str, str]:
        """What the health service answers, by service name ("" is the whole server): SERVING, NOT_SERVING."""
        return {k: health_pb2.HealthCheckResponse.ServingStatus.Name(v) for k, v in self._health.items()}


__all__ = [
    "AdminServicer",
    "BearerTokenInterceptor",
    "InferenceServicer",
    "ScoringServer",
    "ServerOptions",
    "TlsConfig",
]
