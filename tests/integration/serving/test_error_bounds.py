"""Caller strings in errors are bounded (issue 12, finding 6): a 10 kB model, version, column, input or output
name, or request id, sent to a real scoring server, comes back in the status details cut to 64 characters
and an ellipsis, with the real status code (NOT_FOUND, INVALID_ARGUMENT) instead of RESOURCE_EXHAUSTED for
metadata over gRPC's budget."""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator

import grpc
import pytest

from modelloop.client import ScoringClient, build_request
from modelloop.contract.errors import InvalidInputError, NotFoundError
from modelloop.contract.wire._generated.inference import grpc_predict_v2_pb2 as pb
from modelloop.contract.wire._generated.inference import grpc_predict_v2_pb2_grpc as pb_grpc
from modelloop.contract.wire.status import MAX_DETAILS_BYTES, bounded_details, error_for
from modelloop.serving.errors import CLIP_LENGTH, CLIP_MARK, clip, clip_names

from .conftest import MIXED, REF, Models, RunningServer, mixed_frame, settings_for

HUGE = 10 * 1024
#: the longest message a bounded error may have here: the fixed text, at most a few clipped names
SHORT = 400


@pytest.fixture(scope="module")
def server(models: Models, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = RunningServer(
        settings_for(
            models,
            tmp_path_factory.mktemp("bounds"),
            models=[f"{REF}/{models.v1.version}", f"{MIXED}/{models.mixed_version}"],
        )
    )
    yield running
    running.stop()


def huge(prefix: str) -> str:
    return prefix + "x" * (HUGE - len(prefix))


def _call(server: RunningServer, request: pb.ModelInferRequest) -> grpc.RpcError:
    with grpc.insecure_channel(server.address) as channel:
        try:
            pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=30)
        except grpc.RpcError as exc:
            return exc
    raise AssertionError("the call succeeded")


def _renamed(request: pb.ModelInferRequest, index: int, name: str) -> pb.ModelInferRequest:
    request.inputs[index].name = name
    return request


def _bad_shape(request: pb.ModelInferRequest, name: str) -> pb.ModelInferRequest:
    request.inputs[0].name = name
    request.inputs[0].shape[:] = [-1]
    return request


def _matrix(name: str) -> pb.ModelInferRequest:
    """One 2-D FP64 input of the wrong width for the all-float reference model."""
    request = pb.ModelInferRequest(model_name=REF)
    request.inputs.add(name=name, datatype="FP64", shape=[1, 3])
    request.raw_input_contents.append(struct.pack("<3d", 1.0, 2.0, 3.0))
    return request


def _short_raw(request: pb.ModelInferRequest, name: str) -> pb.ModelInferRequest:
    request.inputs[0].name = name
    request.raw_input_contents[0] = struct.pack("<d", 1.0)[:-1]
    return request


Case = tuple[str, Callable[[Models], pb.ModelInferRequest], grpc.StatusCode, str]
CASES: list[Case] = [
    ("model name", lambda m: build_request(huge("model-"), m.rows(2)),
     grpc.StatusCode.NOT_FOUND, "model model-xxx"),
    ("version", lambda m: build_request(REF, m.rows(2), version=huge("9")),
     grpc.StatusCode.NOT_FOUND, "has no version 9xx"),
    ("unknown column", lambda m: build_request(REF, m.rows(2).assign(**{huge("col-"): 1.0})),
     grpc.StatusCode.INVALID_ARGUMENT, "unknown column(s): col-xxx"),
    ("many unknown columns", lambda m: build_request(
        REF, m.rows(2).assign(**{huge(f"c{i}-"): 1.0 for i in range(20)})),
     grpc.StatusCode.INVALID_ARGUMENT, "unknown column(s): c0-xxx"),
    ("string model column", lambda m: _renamed(build_request(MIXED, mixed_frame(2)[["size"]]), 0, huge("m-")),
     grpc.StatusCode.INVALID_ARGUMENT, "unknown column(s): m-xxx"),
    ("matrix input", lambda m: _matrix(huge("mx-")),
     grpc.StatusCode.INVALID_ARGUMENT, "input 'mx-xxx"),
    ("input shape", lambda m: _bad_shape(build_request(REF, m.rows(2)), huge("in-")),
     grpc.StatusCode.INVALID_ARGUMENT, "input 'in-xxx"),
    ("raw contents", lambda m: _short_raw(build_request(REF, m.rows(1)), huge("raw-")),
     grpc.StatusCode.INVALID_ARGUMENT, "input 'raw-xxx"),
    ("request id", lambda m: build_request(REF, m.rows(2), request_id=huge("rid-")),
     grpc.StatusCode.INVALID_ARGUMENT, "request id has"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "make", "code", "start"), CASES, ids=[c[0] for c in CASES])
def test_huge_caller_strings_come_back_cut_with_the_real_code(
    server: RunningServer, models: Models, case: str, make: Callable[[Models], pb.ModelInferRequest],
    code: grpc.StatusCode, start: str,
) -> None:  # fmt: skip
    for _ in range(5):  # over gRPC's soft metadata limit, the answer was RESOURCE_EXHAUSTED only sometimes
        error = _call(server, make(models))
        details = error.details() or ""
        assert error.code() == code, (error.code(), details[:200])
        assert start in details, details[:200]
        assert len(details) < SHORT, len(details)
        assert "x" * (CLIP_LENGTH + 1) not in details


def test_a_clipped_name_keeps_its_first_64_characters_and_a_mark(
    server: RunningServer, models: Models
) -> None:
    name = "abcdefgh" * 8 + huge("tail-")
    details = _call(server, build_request(name, models.rows(1))).details() or ""
    assert details == f"model {name[:CLIP_LENGTH]}{CLIP_MARK} is not served here"


def test_metadata_and_ready_calls_are_bounded_too(server: RunningServer) -> None:
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelMetadata(pb.ModelMetadataRequest(name=huge("meta-")), timeout=30)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        assert len(info.value.details() or "") < SHORT
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelMetadata(pb.ModelMetadataRequest(name=REF, version=huge("7")), timeout=30)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        assert len(info.value.details() or "") < SHORT
        ready = stub.ModelReady(pb.ModelReadyRequest(name=huge("ready-")), timeout=30)
        assert not ready.ready


def test_the_python_client_raises_the_mapped_error_with_a_short_message(
    server: RunningServer, models: Models
) -> None:
    with ScoringClient(server.address) as client:
        with pytest.raises(NotFoundError) as not_found:
            client.predict(huge("model-"), models.rows(1))
        assert len(str(not_found.value)) < SHORT
        with pytest.raises(InvalidInputError) as invalid:
            client.predict(REF, models.rows(1).assign(**{huge("col-"): 1.0}))
        assert len(str(invalid.value)) < SHORT
        assert len(client.predict(REF, models.rows(2)).predictions) == 2  # still serving


def test_many_huge_unknown_columns_are_listed_five_at_most(server: RunningServer, models: Models) -> None:
    extra = {huge(f"c{i}-"): 1.0 for i in range(20)}
    details = _call(server, build_request(REF, models.rows(1).assign(**extra))).details() or ""
    assert details.count(CLIP_MARK) == 5 and "and 15 more" in details


def test_clip_cuts_at_64_characters_and_hides_control_characters() -> None:
    assert clip("a" * 64) == "a" * 64
    assert clip("a" * 65) == "a" * 64 + CLIP_MARK
    assert clip("line\nbreak") == "line?break"
    assert clip(12) == "12"
    assert clip_names(["a", "b"]) == "a, b"
    assert clip_names([str(i) for i in range(7)]) == "0, 1, 2, 3, 4 and 2 more"


def test_details_stay_within_the_metadata_budget() -> None:
    assert MAX_DETAILS_BYTES * 3 < 8 * 1024  # percent-encoded, still below gRPC's 8 KiB soft limit
    assert bounded_details("short") == "short"
    for text in ("x" * 20_000, "\u00e9" * 20_000, "\U0001f600" * 20_000):
        cut = bounded_details(text)
        assert len(cut.encode()) <= MAX_DETAILS_BYTES and cut.endswith(CLIP_MARK)
    assert len(str(error_for(grpc.StatusCode.NOT_FOUND, "y" * 50_000)).encode()) <= MAX_DETAILS_BYTES
