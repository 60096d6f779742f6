"""Open Inference Protocol tensors <-> numpy: typed `contents` and little-endian `raw_*_contents`.

Called by the gRPC adapter (`modelloop.serving.grpc_server`) to decode `ModelInferRequest` inputs into
`serving.schema.InputTensor`s and to encode outputs, in the encoding the request used (raw in, raw out), and
by `serving.client` for the other direction. BYTES elements in raw form are each preceded by their length as
a 4-byte little-endian unsigned integer. Errors name the input (cut by `serving.errors.clip`) and the
problem, never the data.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np

from modelloop.contract.errors import InvalidInputError

from .errors import clip
from .schema import InputTensor

#: datatype -> (numpy little-endian dtype, InferTensorContents field)
DATATYPES: dict[str, tuple[str, str]] = {
    "BOOL": ("|b1", "bool_contents"),
    "UINT8": ("|u1", "uint_contents"),
    "UINT16": ("<u2", "uint_contents"),
    "UINT32": ("<u4", "uint_contents"),
    "UINT64": ("<u8", "uint64_contents"),
    "INT8": ("|i1", "int_contents"),
    "INT16": ("<i2", "int_contents"),
    "INT32": ("<i4", "int_contents"),
    "INT64": ("<i8", "int64_contents"),
    "FP16": ("<f2", ""),
    "FP32": ("<f4", "fp32_contents"),
    "FP64": ("<f8", "fp64_contents"),
    "BYTES": ("O", "bytes_contents"),
}
_LEN = struct.Struct("<I")
_ITEMSIZE = {name: np.dtype(dtype).itemsize for name, (dtype, _) in DATATYPES.items()}


def _shape(name: str, shape: Sequence[int]) -> tuple[int, ...]:
    dims = tuple(shape)  # int64 values already
    if not dims or min(dims) < 0:
        raise InvalidInputError(
            f"input '{clip(name)}' has shape {clip(list(dims))}; every dimension must be given and >= 0"
        )
    return dims


def decode_inputs(request: Any) -> list[InputTensor]:
    """The inputs of a `ModelInferRequest` as numpy arrays (typed or raw contents)."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise InvalidInputError(f"request has {len(request.inputs)} inputs but {len(raw)} raw_input_contents")
    tensors = []
    for i, tensor in enumerate(request.inputs):
        name = tensor.name
        datatype = tensor.datatype
        if datatype not in DATATYPES:
            raise InvalidInputError(f"input '{clip(name)}' has unknown datatype '{clip(datatype)}'")
        shape = _shape(name, tensor.shape)
        size = math.prod(shape)
        if raw:
            if tensor.HasField("contents"):
                raise InvalidInputError(f"input '{clip(name)}' has typed contents and raw_input_contents")
            data = decode_raw(name, datatype, raw[i], size)
        else:
            data = _decode_typed(name, datatype, tensor.contents, size)
        tensors.append(InputTensor(name, datatype, shape, data))
    return tensors


def decode_raw(name: str, datatype: str, payload: bytes, size: int) -> np.ndarray[Any, Any]:
    dtype, _ = DATATYPES[datatype]
    if datatype == "BYTES":
        return _split_bytes(name, payload, size)
    need = size * _ITEMSIZE[datatype]
    if len(payload) != need:
        raise InvalidInputError(
            f"input '{clip(name)}': raw contents hold {len(payload)} bytes; "
            f"{size} {datatype} element(s) need {need}"
        )
    return np.frombuffer(payload, dtype=dtype)


def _split_bytes(name: str, payload: bytes, size: int) -> np.ndarray[Any, Any]:
    out = np.empty(size, dtype=object)
    pos, end = 0, len(payload)
    for i in range(size):
        if pos + 4 > end:
            raise InvalidInputError(
                f"input '{clip(name)}': raw BYTES contents end before element {i} of {size}"
            )
        (length,) = _LEN.unpack_from(payload, pos)
        pos += 4
        if pos + length > end:
            raise InvalidInputError(
                f"input '{clip(name)}': raw BYTES element {i} is longer than the data left"
            )
        out[i] = payload[pos : pos + length]
        pos += length
    if pos != end:
        raise InvalidInputError(
            f"input '{clip(name)}': raw BYTES contents have {end - pos} bytes after {size} elements"
        )
    return out


def _decode_typed(name: str, datatype: str, contents: Any, size: int) -> np.ndarray[Any, Any]:
    dtype, field = DATATYPES[datatype]
    if not field:
        raise InvalidInputError(f"input '{clip(name)}': {datatype} can only be sent as raw_input_contents")
    values = getattr(contents, field)
    if len(values) != size:
        raise InvalidInputError(
            f"input '{clip(name)}' has {len(values)} element(s) in {field}; its shape needs {size}"
        )
    for other in DATATYPES.values():
        if other[1] and other[1] != field and len(getattr(contents, other[1])):
            raise InvalidInputError(f"input '{clip(name)}' is {datatype} but has values in {other[1]}")
    if datatype == "BYTES":
        out = np.empty(size, dtype=object)
        out[:] = list(values)
        return out
    try:
        return np.asarray(values, dtype=np.dtype(dtype).newbyteorder("="))
    except OverflowError:
        raise InvalidInputError(f"input '{clip(name)}' has values out of range for {datatype}") from None


# encoding -----------------------------------------------------------------------------------------------


def numpy_datatype(array: np.ndarray[Any, Any]) -> str:
    """The OIP datatype for a numpy array (object and string arrays are BYTES)."""
    kind, size = array.dtype.kind, array.dtype.itemsize
    if kind == "b":
        return "BOOL"
    if kind == "f":
        return {2: "FP16", 4: "FP32"}.get(size, "FP64")
    if kind == "i":
        return {1: "INT8", 2: "INT16", 4: "INT32"}.get(size, "INT64")
    if kind == "u":
        return {1: "UINT8", 2: "UINT16", 4: "UINT32"}.get(size, "UINT64")
    return "BYTES"


def to_bytes_elements(array: np.ndarray[Any, Any]) -> list[bytes]:
    return [v if isinstance(v, bytes) else str(v).encode() for v in array.reshape(-1)]


def encode_raw(array: np.ndarray[Any, Any], datatype: str) -> bytes:
    """Row-major little-endian bytes of `array` as `datatype` (BYTES with 4-byte length prefixes)."""
    if datatype == "BYTES":
        return b"".join(_LEN.pack(len(b)) + b for b in to_bytes_elements(array))
    return np.ascontiguousarray(array, dtype=DATATYPES[datatype][0]).tobytes()


def fill_contents(contents: Any, array: np.ndarray[Any, Any], datatype: str) -> None:
    """Put `array` into an InferTensorContents message in the field for `datatype`."""
    field = DATATYPES[datatype][1]
    if not field:
        raise InvalidInputError(f"{datatype} can only be sent as raw contents")
    target = getattr(contents, field)
    if datatype == "BYTES":
        target.extend(to_bytes_elements(array))
    else:
        target.extend(array.reshape(-1).tolist())


__all__ = [
    "DATATYPES",
    "decode_inputs",
    "decode_raw",
    "encode_raw",
    "fill_contents",
    "numpy_datatype",
    "to_bytes_elements",
]
