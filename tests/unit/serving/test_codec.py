"""OIP tensor decoding and encoding: every datatype, typed and raw contents, BYTES length prefixes, and
malformed input rejected with a message that names the input."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from modelloop.contract.errors import InvalidInputError
from modelloop.contract.wire._generated.inference import grpc_predict_v2_pb2 as pb
from modelloop.contract.wire.codec import DATATYPES, encode_raw, fill_contents, numpy_datatype
from modelloop.serving.codec import decode_inputs

VALUES = {
    "BOOL": np.array([True, False, True]),
    "UINT8": np.array([0, 7, 255], dtype=np.uint8),
    "UINT16": np.array([0, 7, 65535], dtype=np.uint16),
    "UINT32": np.array([0, 7, 2**32 - 1], dtype=np.uint32),
    "UINT64": np.array([0, 7, 2**64 - 1], dtype=np.uint64),
    "INT8": np.array([-128, 0, 127], dtype=np.int8),
    "INT16": np.array([-(2**15), 0, 2**15 - 1], dtype=np.int16),
    "INT32": np.array([-(2**31), 0, 2**31 - 1], dtype=np.int32),
    "INT64": np.array([-(2**63), 0, 2**63 - 1], dtype=np.int64),
    "FP16": np.array([0.5, -1.0, 2.0], dtype=np.float16),
    "FP32": np.array([0.5, -1.25, 3.0e38], dtype=np.float32),
    "FP64": np.array([0.1, -1e300, np.pi]),
    "BYTES": np.array([b"a", b"", "é".encode()], dtype=object),
}


def _request(datatype: str, values: np.ndarray, *, raw: bool) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="m")
    tensor = request.inputs.add(name="x", datatype=datatype, shape=[len(values)])
    if raw:
        request.raw_input_contents.append(encode_raw(values, datatype))
    else:
        fill_contents(tensor.contents, values, datatype)
    return pb.ModelInferRequest.FromString(request.SerializeToString())


@pytest.mark.parametrize("datatype", sorted(DATATYPES))
@pytest.mark.parametrize("raw", [True, False])
def test_every_datatype_round_trips(datatype: str, raw: bool) -> None:
    values = VALUES[datatype]
    if datatype == "FP16" and not raw:
        with pytest.raises(InvalidInputError, match="FP16 can only be sent as raw"):
            _request(datatype, values, raw=raw)
        return
    (tensor,) = decode_inputs(_request(datatype, values, raw=raw))
    assert tensor.datatype == datatype and tensor.shape == (3,)
    assert list(tensor.data) == list(values)
    if datatype != "BYTES":
        assert numpy_datatype(values) == datatype


def test_raw_bytes_use_little_endian_length_prefixes() -> None:
    payload = encode_raw(np.array([b"ab", b"", b"xyz"], dtype=object), "BYTES")
    assert payload == struct.pack("<I", 2) + b"ab" + struct.pack("<I", 0) + struct.pack("<I", 3) + b"xyz"
    assert encode_raw(np.array([1.0]), "FP64") == struct.pack("<d", 1.0)


def _raw(datatype: str, shape: list[int], payload: bytes) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="m")
    request.inputs.add(name="col_a", datatype=datatype, shape=shape)
    request.raw_input_contents.append(payload)
    return request


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (_raw("FP64", [2], b"\x00" * 12), "raw contents hold 12 bytes; 2 FP64 element"),
        (_raw("BYTES", [2], struct.pack("<I", 1) + b"a" + b"\x01\x00"), "end before element 1"),
        (_raw("BYTES", [1], struct.pack("<I", 9) + b"abc"), "longer than the data left"),
        (_raw("BYTES", [1], struct.pack("<I", 1) + b"abcd"), "3 bytes after 1 elements"),
        (_raw("FLOAT", [1], b"\x00"), "unknown datatype"),
        (_raw("FP64", [-1], b""), "every dimension must be given"),
    ],
)
def test_malformed_raw_contents_name_the_input(request_: pb.ModelInferRequest, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message) as info:
        decode_inputs(request_)
    assert "col_a" in str(info.value) or "datatype" in str(info.value)


def test_typed_contents_must_match_shape_and_field() -> None:
    request = pb.ModelInferRequest(model_name="m")
    request.inputs.add(name="col_a", datatype="FP64", shape=[3]).contents.fp64_contents.extend([1.0, 2.0])
    with pytest.raises(InvalidInputError, match="'col_a' has 2 element"):
        decode_inputs(request)
    request = pb.ModelInferRequest(model_name="m")
    tensor = request.inputs.add(name="col_a", datatype="FP64", shape=[1])
    tensor.contents.fp64_contents.append(1.0)
    tensor.contents.int64_contents.append(1)
    with pytest.raises(InvalidInputError, match="has values in int64_contents"):
        decode_inputs(request)


def test_raw_and_inputs_must_pair_up() -> None:
    request = _raw("FP64", [1], struct.pack("<d", 1.0))
    request.inputs.add(name="col_b", datatype="FP64", shape=[1])
    with pytest.raises(InvalidInputError, match="2 inputs but 1 raw_input_contents"):
        decode_inputs(request)
