"""The request the client sends and the response it reads, without a server: one 1-D tensor per column in
raw contents, the outputs asked for, and outputs decoded from raw and from typed contents."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from modelloop.client import InvalidInputError, build_request, decode_outputs, service_config
from modelloop.contract.wire._generated.inference import grpc_predict_v2_pb2 as pb
from modelloop.contract.wire.codec import decode_raw, encode_raw, fill_contents
from modelloop.contract.wire.names import OIP_SERVICE, PREDICT_OUTPUT, PROBA_OUTPUT


def test_one_raw_tensor_per_column() -> None:
    frame = pd.DataFrame({"x": [1.5, 2.5, 3.5], "n": [1, 2, 3], "color": ["red", "blue", "é"]})
    request = build_request("m", frame, probabilities=True, version="2", request_id="r-1")
    assert (request.model_name, request.model_version, request.id) == ("m", "2", "r-1")
    tensors = [(t.name, t.datatype, list(t.shape), t.HasField("contents")) for t in request.inputs]
    assert tensors == [("x", "FP64", [3], False), ("n", "INT64", [3], False), ("color", "BYTES", [3], False)]
    assert len(request.raw_input_contents) == 3
    assert decode_raw("x", "FP64", request.raw_input_contents[0], 3).tolist() == [1.5, 2.5, 3.5]
    colors = decode_raw("color", "BYTES", request.raw_input_contents[2], 3)
    assert [c.decode() for c in colors] == ["red", "blue", "é"]
    assert [o.name for o in request.outputs] == [PREDICT_OUTPUT, PROBA_OUTPUT]


def test_rows_as_dicts_and_their_gaps() -> None:
    request = build_request("m", [{"x": 1.0, "flag": True}, {"x": None, "flag": False}])
    assert [(t.name, t.datatype) for t in request.inputs] == [("x", "FP64"), ("flag", "BOOL")]
    assert np.isnan(decode_raw("x", "FP64", request.raw_input_contents[0], 2)[1])
    assert [o.name for o in request.outputs] == [PREDICT_OUTPUT]
    with pytest.raises(InvalidInputError, match="column 'c' has missing values"):
        build_request("m", [{"c": "a"}, {"c": None}])
    with pytest.raises(InvalidInputError, match="not one dict"):
        build_request("m", {"x": 1.0})
    with pytest.raises(InvalidInputError, match="no rows"):
        build_request("m", [])


@pytest.mark.parametrize("raw", [True, False])
def test_outputs_decoded_from_raw_and_typed_contents(raw: bool) -> None:
    predictions = np.array(["yes", "no"], dtype=object)
    probabilities = np.array([[0.25, 0.75], [0.5, 0.5]])
    response = pb.ModelInferResponse(model_name="m", model_version="1")
    outputs = ((PREDICT_OUTPUT, predictions, "BYTES"), (PROBA_OUTPUT, probabilities, "FP64"))
    for name, array, datatype in outputs:
        tensor = response.outputs.add(name=name, datatype=datatype, shape=list(array.shape))
        if raw:
            response.raw_output_contents.append(encode_raw(array, datatype))
        else:
            fill_contents(tensor.contents, array, datatype)
    decoded = decode_outputs(response)
    assert decoded[PREDICT_OUTPUT].tolist() == ["yes", "no"]
    np.testing.assert_array_equal(decoded[PROBA_OUTPUT], probabilities)


def test_service_config_retries_inference_only() -> None:
    (method,) = json.loads(service_config())["methodConfig"]
    assert method["name"] == [{"service": OIP_SERVICE}]
    assert method["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE", "CANCELLED"]
