"""Rows -> a `ModelInferRequest`, and a `ModelInferResponse` -> numpy arrays: the client's side of the codec.

The request form: one 1-D tensor per column (shape `[rows]`, named after the column), its values in
`raw_input_contents` (little-endian, BYTES for strings, `contract.wire.codec`), and the outputs asked for by
name (`predict`, and `predict_proba` for probabilities). Used by `ScoringClient.predict`, and by callers
and tests that send requests through the generated stubs themselves.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from modelloop.contract.errors import InvalidInputError
from modelloop.contract.wire._generated.inference import grpc_predict_v2_pb2 as pb
from modelloop.contract.wire.codec import DATATYPES, decode_raw, encode_raw, numpy_datatype
from modelloop.contract.wire.names import PREDICT_OUTPUT, PROBA_OUTPUT


def columns(data: Any) -> dict[str, np.ndarray[Any, Any]]:
    """The columns of `data` (a DataFrame or a list of dicts, one per row) as 1-D arrays for the wire."""
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
) -> pb.ModelInferRequest:
    """A raw-encoded ModelInferRequest with one tensor per column (see the module docstring)."""
    request = pb.ModelInferRequest(model_name=model, model_version=version or "", id=request_id or "")
    for name, values in columns(data).items():
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


def decode_outputs(response: pb.ModelInferResponse) -> dict[str, np.ndarray[Any, Any]]:
    """Output tensors of a ModelInferResponse as numpy arrays (raw or typed contents; BYTES as str)."""
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


__all__ = ["build_request", "columns", "decode_outputs"]
