"""Bad input never hurts the server: every error class answers with the right status code and a message that
names the column and the problem without echoing the data, and the server keeps serving afterwards."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable

import grpc
import numpy as np
import pandas as pd
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from modelloop.client import OversizedInputError, ScoringClient, build_request
from modelloop.contract.errors import ConfigError, InvalidInputError, NotFoundError, UnavailableError
from modelloop.contract.wire._generated.inference import grpc_predict_v2_pb2 as pb
from modelloop.contract.wire._generated.inference import grpc_predict_v2_pb2_grpc as pb_grpc
from modelloop.contract.wire._generated.modelloop.admin.v1 import admin_pb2 as admin_pb
from modelloop.serving.core import InferenceCore
from modelloop.serving.grpc_server import ScoringServer
from modelloop.serving.hosting import ModelHost
from modelloop.serving.metrics import ServingMetrics
from modelloop.serving.model_host import LoadedModel
from modelloop.serving.schema import Column, Features, ModelSchema
from modelloop.serving.status import INTERNAL_MESSAGE

from .conftest import ADMIN_TOKEN, MIXED, REF, REG, Models, RunningServer, mixed_frame, settings_for

SECRET = 987654.125


@pytest.fixture(scope="module")
def server(models: Models, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    running = RunningServer(
        settings_for(
            models, tmp_path_factory.mktemp("errors"),
            models=[
                f"{REF}/{models.v1.version}",
                f"{MIXED}/{models.mixed_version}",
                f"{REG}/{models.regression.version}",
            ],
            max_message_bytes=256 * 1024, max_rows=1000,
        )
    )  # fmt: skip
    yield running
    running.stop()


def secret_rows(models: Models, n: int = 2) -> pd.DataFrame:
    rows = models.rows(n).copy()
    rows.iloc[:, :] = SECRET
    return rows


def call(server: RunningServer, request: pb.ModelInferRequest) -> grpc.RpcError:
    channel = grpc.insecure_channel(server.address, options=[("grpc.max_send_message_length", 64 << 20)])
    try:
        pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=10)
    except grpc.RpcError as exc:
        return exc
    finally:
        channel.close()
    raise AssertionError("the call succeeded")


def still_serving(server: RunningServer, models: Models) -> None:
    with ScoringClient(server.address, admin_token=ADMIN_TOKEN) as client:
        assert len(client.predict(REF, models.rows(2)).predictions) == 2


def _drop(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    return frame.drop(columns=[column])


CASES: list[tuple[str, Callable[[Models], pb.ModelInferRequest], grpc.StatusCode, str]] = [
    ("missing column", lambda m: build_request(REF, _drop(secret_rows(m), "mean_area")),
     grpc.StatusCode.INVALID_ARGUMENT, "missing required column(s): mean_area"),
    ("unknown column", lambda m: build_request(REF, secret_rows(m).assign(bogus_col=SECRET)),
     grpc.StatusCode.INVALID_ARGUMENT, "unknown column(s): bogus_col"),
    ("wrong datatype", lambda m: build_request(REF, secret_rows(m).assign(mean_area=["x", "y"])),
     grpc.StatusCode.INVALID_ARGUMENT, "column 'mean_area' has datatype BYTES; the model expects FP64"),
    ("NaN", lambda m: build_request(REF, secret_rows(m).assign(mean_area=[np.nan, SECRET])),
     grpc.StatusCode.INVALID_ARGUMENT, "column 'mean_area' contains NaN"),
    ("unseen category", lambda m: build_request(MIXED, mixed_frame(2).assign(color=["purple", "red"])),
     grpc.StatusCode.INVALID_ARGUMENT, "column 'color' has 1 value(s) that are not categories seen"),
    ("unknown model", lambda m: build_request("no-such-model", secret_rows(m)),
     grpc.StatusCode.NOT_FOUND, "model no-such-model is not served here"),
    ("unknown version", lambda m: build_request(REF, secret_rows(m), version="999"),
     grpc.StatusCode.NOT_FOUND, "has no version 999 served here"),
    ("regressor probabilities", lambda m: build_request(REG, m.regression.features.head(1),
                                                        probabilities=True),
     grpc.StatusCode.INVALID_ARGUMENT, "gives no class probabilities"),
    ("too many rows", lambda m: build_request(REF, pd.concat([secret_rows(m, 1)] * 1001)),
     grpc.StatusCode.RESOURCE_EXHAUSTED, "1001 rows; at most 1000"),
    ("oversized message", lambda m: build_request(REF, pd.concat([secret_rows(m, 1)] * 2000)),
     grpc.StatusCode.RESOURCE_EXHAUSTED, "larger than max"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "make", "code", "message"), CASES, ids=[c[0] for c in CASES])
def test_errors_map_to_status_codes(server, models: Models, case, make, code, message) -> None:  # type: ignore[no-untyped-def]
    error = call(server, make(models))
    assert error.code() == code, error.details()
    assert message in error.details()
    assert str(SECRET) not in error.details() and "987654" not in error.details()
    still_serving(server, models)


def _request_with(models: Models, mutate: Callable[[pb.ModelInferRequest], None]) -> pb.ModelInferRequest:
    request = build_request(REF, secret_rows(models))
    mutate(request)
    return request


def _shape(request: pb.ModelInferRequest) -> None:
    request.inputs[3].shape[:] = [1, 2]


def _rows(request: pb.ModelInferRequest) -> None:
    request.inputs[3].shape[:] = [1]
    request.raw_input_contents[3] = struct.pack("<d", SECRET)


def _raw_length(request: pb.ModelInferRequest) -> None:
    request.raw_input_contents[3] = request.raw_input_contents[3][:-3]


def _bytes_prefix(request: pb.ModelInferRequest) -> None:
    request.inputs[3].datatype = "BYTES"
    request.raw_input_contents[3] = struct.pack("<I", 200) + b"abc"


def _output(request: pb.ModelInferRequest) -> None:
    request.outputs.add(name="embedding")


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (_shape, "column 'mean_area' has shape [1, 2]"),
        (_rows, "column 'mean_area' has 1 rows but column 'mean_radius' has 2"),
        (_raw_length, "input 'mean_area': raw contents hold 13 bytes; 2 FP64 element(s) need 16"),
        (_bytes_prefix, "input 'mean_area': raw BYTES element 0 is longer than the data left"),
        (_output, "unknown output(s) embedding"),
    ],
)
def test_malformed_requests(server, models: Models, mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    error = call(server, _request_with(models, mutate))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and message in error.details()
    assert "987654" not in error.details()
    still_serving(server, models)


def test_client_maps_status_codes_to_modelloop_errors(server, models: Models) -> None:  # type: ignore[no-untyped-def]
    with ScoringClient(server.address, admin_token=ADMIN_TOKEN) as client:
        with pytest.raises(InvalidInputError, match="mean_area"):
            client.predict(REF, _drop(models.rows(1), "mean_area"))
        with pytest.raises(NotFoundError):
            client.predict("no-such-model", models.rows(1))
        with pytest.raises(OversizedInputError):
            client.predict(REF, pd.concat([models.rows(1)] * 1001))
        with pytest.raises(NotFoundError):
            client.load_model(REF, "999")
    with ScoringClient("127.0.0.1:1") as nowhere, pytest.raises(UnavailableError):
        nowhere.predict(REF, models.rows(1), timeout=2)


def test_unseen_categories_can_pass(start_server, models: Models) -> None:  # type: ignore[no-untyped-def]
    server = start_server(models=[f"{MIXED}/{models.mixed_version}"], unseen_categories="pass")
    with ScoringClient(server.address, admin_token=ADMIN_TOKEN) as client:
        result = client.predict(MIXED, mixed_frame(2).assign(color=["purple", "red"]))
    assert len(result.predictions) == 2


def test_bearer_token_guards_all_but_health(start_server, models: Models, tmp_path) -> None:  # type: ignore[no-untyped-def]
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token\n")
    server = start_server(token_file=token_file)
    with ScoringClient(server.address) as anonymous:
        with pytest.raises(ConfigError, match="not authenticated"):
            anonymous.predict(REF, models.rows(1))
        with pytest.raises(ConfigError, match="not authenticated"):
            anonymous.list_models()
    with ScoringClient(server.address, token="wrong") as wrong, pytest.raises(ConfigError):
        wrong.predict(REF, models.rows(1))
    with ScoringClient(server.address, token="s3cret-token") as client:
        assert len(client.predict(REF, models.rows(1)).predictions) == 1
    channel = grpc.insecure_channel(server.address)
    status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=REF), timeout=5)
    assert status.status == health_pb2.HealthCheckResponse.SERVING
    channel.close()


def test_the_admin_service_is_off_without_its_own_token(start_server, models: Models) -> None:  # type: ignore[no-untyped-def]
    server = start_server(admin_token_file=None)
    channel = grpc.insecure_channel(server.address)
    try:
        for call, request in (
            ("ListModels", admin_pb.ListModelsRequest()),
            ("UnloadModel", admin_pb.UnloadModelRequest(model=REF, role="champion")),
        ):
            method = channel.unary_unary(
                f"/modelloop.admin.v1.ModelAdmin/{call}",
                request_serializer=type(request).SerializeToString,
                response_deserializer=lambda b: b,
            )
            with pytest.raises(grpc.RpcError) as refused:
                method(request, timeout=5)
            assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        channel.close()
    with ScoringClient(server.address, admin_token=ADMIN_TOKEN) as client:
        assert len(client.predict(REF, models.rows(1)).predictions) == 1  # the model was not unloaded
        assert list(client._inference.ServerMetadata(pb.ServerMetadataRequest(), timeout=5).extensions) == []


def test_the_admin_service_takes_only_its_own_token(start_server, models: Models, tmp_path) -> None:  # type: ignore[no-untyped-def]
    token_file = tmp_path / "callers-token"
    token_file.write_text("callers-token")
    server = start_server(token_file=token_file)
    with ScoringClient(server.address, token="callers-token") as caller:
        assert len(caller.predict(REF, models.rows(1)).predictions) == 1
        with pytest.raises(ConfigError, match="not authenticated"):
            caller.list_models()  # the callers' token never opens the admin service
        with pytest.raises(ConfigError, match="not authenticated"):
            caller.unload_model(REF)
    with (
        ScoringClient(server.address, token="callers-token", admin_token="wrong") as wrong,
        pytest.raises(ConfigError, match="not authenticated"),
    ):
        wrong.list_models()
    with ScoringClient(server.address, token="callers-token", admin_token=ADMIN_TOKEN) as admin:
        assert [m.champion_version for m in admin.list_models()] == [models.v1.version]
        assert len(admin.predict(REF, models.rows(1)).predictions) == 1


def _flaky_model(name: str, version: str) -> LoadedModel:
    """A model whose predict raises on negative input: an unexpected failure inside the model."""
    schema = ModelSchema(columns=(Column("x", "float", "FP64", "float64", True),), prediction_datatype="FP64")

    def predict(features: Features):  # type: ignore[no-untyped-def]
        assert features.matrix is not None
        if (features.matrix < 0).any():
            raise ZeroDivisionError("secret internal detail")
        return features.matrix[:, 0] * 2, None

    return LoadedModel(name, version, schema, "test", predict)


def test_unexpected_failures_are_internal_and_not_ready_is_unavailable() -> None:
    async def main() -> None:
        metrics = ServingMetrics()
        host = ModelHost(_flaky_model, metrics=metrics)
        server = ScoringServer(InferenceCore(host, metrics=metrics))
        port = await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = pb_grpc.GRPCInferenceServiceStub(channel)
                health = health_pb2_grpc.HealthStub(channel)
                assert (await health.Check(health_pb2.HealthCheckRequest())).status == 2  # NOT_SERVING
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await stub.ModelInfer(build_request("flaky", [{"x": 1.0}]))
                assert info.value.code() == grpc.StatusCode.UNAVAILABLE
                await host.load("flaky", "1")
                await server.set_serving()
                assert (await health.Check(health_pb2.HealthCheckRequest())).status == 1  # SERVING
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await stub.ModelInfer(build_request("flaky", [{"x": -1.0}]))
                assert info.value.code() == grpc.StatusCode.INTERNAL
                assert info.value.details() == INTERNAL_MESSAGE
                ok = await stub.ModelInfer(build_request("flaky", [{"x": 2.0}]))
                assert np.frombuffer(ok.raw_output_contents[0], "<f8").tolist() == [4.0]
        finally:
            await server.stop(1)
            await host.close()
        codes = {
            s.labels["code"] for m in metrics.registry.collect() for s in m.samples if "requests" in s.name
        }
        assert {"OK", "INTERNAL", "UNAVAILABLE"} <= codes

    asyncio.run(main())
