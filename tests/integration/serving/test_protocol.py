"""The Open Inference Protocol v2 over a real gRPC server hosting real MLflow models: metadata from the
signature, every datatype in typed and raw form, answers in the request's encoding, a hand-encoded client
that does not use our stubs, health per model and overall, reflection on request, several models in one
process."""

from __future__ import annotations

import struct

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from modelloop.client import ScoringClient
from modelloop.contract.wire._generated.inference import grpc_predict_v2_pb2 as pb
from modelloop.contract.wire._generated.inference import grpc_predict_v2_pb2_grpc as pb_grpc
from modelloop.contract.wire.codec import encode_raw, fill_contents

from . import wire
from .conftest import ADMIN_TOKEN, MIXED, REF, REG, Models, mixed_frame

NUMERIC = ["UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64"]


@pytest.fixture(scope="module")
def server(models: Models, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from .conftest import RunningServer, settings_for

    running = RunningServer(
        settings_for(
            models,
            tmp_path_factory.mktemp("protocol"),
            models=[
                f"{REF}@production",
                f"{REG}/{models.regression.version}",
                f"{MIXED}/{models.mixed_version}",
            ],
            reflection=True,
        )
    )
    yield running
    running.stop()


@pytest.fixture(scope="module")
def stub(server) -> pb_grpc.GRPCInferenceServiceStub:  # type: ignore[no-untyped-def]
    channel = grpc.insecure_channel(server.address)
    yield pb_grpc.GRPCInferenceServiceStub(channel)
    channel.close()


def test_metadata_comes_from_the_signature(stub, models: Models) -> None:  # type: ignore[no-untyped-def]
    meta = stub.ModelMetadata(pb.ModelMetadataRequest(name=REF))
    assert meta.versions == [models.v1.version] and meta.platform == "sklearn"
    assert [(i.name, i.datatype, list(i.shape)) for i in meta.inputs] == [
        (c, "FP64", [-1]) for c in models.v1.features.columns
    ]
    assert [(o.name, o.datatype, list(o.shape)) for o in meta.outputs] == [
        ("predict", "INT64", [-1]),
        ("predict_proba", "FP64", [-1, 2]),
    ]
    mixed = stub.ModelMetadata(pb.ModelMetadataRequest(name=MIXED))
    assert [(i.name, i.datatype) for i in mixed.inputs] == [
        ("color", "BYTES"), ("count", "INT64"), ("size", "FP64"), ("flag", "BOOL"),
    ]  # fmt: skip
    reg = stub.ModelMetadata(pb.ModelMetadataRequest(name=REG))
    assert [o.name for o in reg.outputs] == ["predict"] and reg.outputs[0].datatype == "FP64"
    server_meta = stub.ServerMetadata(pb.ServerMetadataRequest())
    assert server_meta.name == "modelloop"


def _numeric_request(models: Models, datatype: str, *, raw: bool) -> pb.ModelInferRequest:
    rows = models.rows(4)
    request = pb.ModelInferRequest(model_name=REF, id=f"dt-{datatype}")
    from modelloop.contract.wire.codec import DATATYPES

    dtype = np.dtype(DATATYPES[datatype][0])
    for name in rows.columns:
        values = rows[name].to_numpy()
        values = (values * 10).astype(dtype) if dtype.kind in "iu" else values.astype(dtype)
        tensor = request.inputs.add(name=name, datatype=datatype, shape=[4])
        if raw:
            request.raw_input_contents.append(encode_raw(values, datatype))
        else:
            fill_contents(tensor.contents, values, datatype)
    request.outputs.add(name="predict")
    request.outputs.add(name="predict_proba")
    return request


@pytest.mark.parametrize("datatype", NUMERIC)
def test_every_numeric_datatype_typed_and_raw(stub, models: Models, datatype: str) -> None:  # type: ignore[no-untyped-def]
    for raw in (True, False):
        if datatype == "FP16" and not raw:
            continue
        response = stub.ModelInfer(_numeric_request(models, datatype, raw=raw))
        assert response.id == f"dt-{datatype}" and response.model_version == models.v1.version
        assert [o.name for o in response.outputs] == ["predict", "predict_proba"]
        if raw:  # raw in, raw out
            assert len(response.raw_output_contents) == 2 and not response.outputs[0].HasField("contents")
            pred = np.frombuffer(response.raw_output_contents[0], "<i8")
            proba = np.frombuffer(response.raw_output_contents[1], "<f8").reshape(4, 2)
        else:
            assert not response.raw_output_contents
            pred = np.array(response.outputs[0].contents.int64_contents)
            proba = np.array(response.outputs[1].contents.fp64_contents).reshape(4, 2)
        assert len(pred) == 4 and set(pred) <= {0, 1}
        np.testing.assert_allclose(proba.sum(axis=1), 1.0)
        assert (pred == proba.argmax(axis=1)).all()


def test_answers_are_exactly_the_registered_models(stub, models: Models) -> None:  # type: ignore[no-untyped-def]
    """The served answers (the numeric fast path) are bit for bit what the registered model gives on a
    DataFrame, whether the request sends one tensor per column (in any order) or one 2-D tensor."""
    import mlflow

    rows = models.v1.features.sample(40, random_state=7).reset_index(drop=True)
    pipe = mlflow.sklearn.load_model(f"models:/{REF}/{models.v1.version}")
    expected_proba = pipe.predict_proba(rows)
    expected = pipe.predict(rows)
    per_column = pb.ModelInferRequest(model_name=REF)
    for name in reversed(rows.columns):  # request order need not be the signature's
        per_column.inputs.add(name=name, datatype="FP64", shape=[len(rows)])
        per_column.raw_input_contents.append(rows[name].to_numpy().astype("<f8").tobytes())
    matrix = pb.ModelInferRequest(model_name=REF)
    matrix.inputs.add(name="input-0", datatype="FP64", shape=list(rows.shape))
    matrix.raw_input_contents.append(rows.to_numpy(dtype=np.float64).astype("<f8").tobytes())
    for request in (per_column, matrix):
        request.outputs.add(name="predict")
        request.outputs.add(name="predict_proba")
        response = stub.ModelInfer(request)
        pred = np.frombuffer(response.raw_output_contents[0], "<i8")
        proba = np.frombuffer(response.raw_output_contents[1], "<f8").reshape(len(rows), 2)
        assert np.array_equal(proba, expected_proba)
        assert np.array_equal(pred, expected)


def test_bytes_bool_and_int_columns(server, stub, models: Models) -> None:  # type: ignore[no-untyped-def]
    frame = mixed_frame(5, seed=3)
    with ScoringClient(server.address, admin_token=ADMIN_TOKEN) as client:
        expected = client.predict(MIXED, frame).predictions
    for raw in (True, False):
        request = pb.ModelInferRequest(model_name=MIXED)
        for name, datatype in (("color", "BYTES"), ("count", "INT64"), ("size", "FP64"), ("flag", "BOOL")):
            values = frame[name].to_numpy()
            if datatype == "BYTES":
                values = np.array([v.encode() for v in values], dtype=object)
            tensor = request.inputs.add(name=name, datatype=datatype, shape=[5])
            if raw:
                request.raw_input_contents.append(encode_raw(values, datatype))
            else:
                fill_contents(tensor.contents, values, datatype)
        response = stub.ModelInfer(request)
        pred = (
            np.frombuffer(response.raw_output_contents[0], "<i8") if raw
            else np.array(response.outputs[0].contents.int64_contents)
        )  # fmt: skip
        assert pred.tolist() == expected.tolist()


def test_a_hand_encoded_client_without_our_stubs(server, models: Models) -> None:  # type: ignore[no-untyped-def]
    rows = models.rows(2)
    channel = grpc.insecure_channel(server.address)
    call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
    # one 2-D FP64 tensor with raw contents, and an all-typed per-column request
    matrix = rows.to_numpy(dtype=np.float64)
    raw_body = wire.infer_request(
        REF, [("input-0", "FP64", [2, matrix.shape[1]], b"")], request_id="wire-1",
        raw=[matrix.astype("<f8").tobytes()], outputs=["predict"],
    )  # fmt: skip
    typed_body = wire.infer_request(
        REF,
        [(c, "FP64", [2], wire.packed_double(7, rows[c].tolist())) for c in rows.columns],
        request_id="wire-2",
    )
    with ScoringClient(server.address, admin_token=ADMIN_TOKEN) as client:
        expected = client.predict(REF, rows).predictions.tolist()
    raw_fields = wire.parse(call(raw_body, timeout=10))
    assert raw_fields[1] == [REF.encode()] and raw_fields[3] == [b"wire-1"]
    output = wire.parse(raw_fields[5][0])
    assert output[1] == [b"predict"] and output[2] == [b"INT64"] and wire.unpack_varints(output[3][0]) == [2]
    assert list(struct.unpack("<2q", raw_fields[6][0])) == expected
    typed_fields = wire.parse(call(typed_body, timeout=10))
    assert 6 not in typed_fields  # typed in, typed out
    contents = wire.parse(wire.parse(typed_fields[5][0])[5][0])
    assert wire.unpack_varints(contents[3][0]) == expected  # int64_contents = 3
    channel.close()


def test_health_per_model_and_overall(server, stub, models: Models) -> None:  # type: ignore[no-untyped-def]
    channel = grpc.insecure_channel(server.address)
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "inference.GRPCInferenceService", REF, REG, MIXED):
        status = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status
        assert status == health_pb2.HealthCheckResponse.SERVING, service
    with pytest.raises(grpc.RpcError) as info:
        health.Check(health_pb2.HealthCheckRequest(service="no-such-model"), timeout=5)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert stub.ServerLive(pb.ServerLiveRequest()).live
    assert stub.ServerReady(pb.ServerReadyRequest()).ready
    assert stub.ModelReady(pb.ModelReadyRequest(name=REF)).ready
    assert stub.ModelReady(pb.ModelReadyRequest(name=REF, version=models.v1.version)).ready
    assert not stub.ModelReady(pb.ModelReadyRequest(name=REF, version="999")).ready
    assert not stub.ModelReady(pb.ModelReadyRequest(name="no-such-model")).ready
    channel.close()


def _reflected_services(address: str) -> list[str]:
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    channel = grpc.insecure_channel(address)
    try:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        responses = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        )
        return [s.name for r in responses for s in r.list_services_response.service]
    finally:
        channel.close()


def test_reflection_is_off_unless_asked(server, start_server) -> None:  # type: ignore[no-untyped-def]
    assert "inference.GRPCInferenceService" in _reflected_services(server.address)
    assert "modelloop.admin.v1.ModelAdmin" in _reflected_services(server.address)
    plain = start_server()
    with pytest.raises(grpc.RpcError) as info:
        _reflected_services(plain.address)
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_several_models_in_one_process(server, models: Models) -> None:  # type: ignore[no-untyped-def]
    with ScoringClient(server.address, admin_token=ADMIN_TOKEN) as client:
        listed = {m.name: m.champion_version for m in client.list_models()}
        assert listed == {REF: models.v1.version, REG: models.regression.version, MIXED: models.mixed_version}
        reg_rows = models.regression.features.head(3)
        reg = client.predict(REG, reg_rows)
        assert reg.predictions.dtype == np.float64 and len(reg.predictions) == 3
        records = [{k: float(v) for k, v in r.items()} for r in models.rows(2).to_dict("records")]
        ref = client.predict(REF, records, probabilities=True)
        assert ref.probabilities is not None and ref.probabilities.shape == (2, 2)
        assert ref.route == "champion" and len(ref.request_id) == 32  # the server made one
