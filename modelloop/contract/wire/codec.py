"""Open Inference Protocol tensor contents <-> numpy, the part both sides of the wire share.

The datatype names and their numpy dtypes (`DATATYPES`), the datatype of an array (`numpy_datatype`), raw
contents (`encode_raw`, `decode_raw`: row-major little-endian bytes; each BYTES element preceded by its length
as a 4-byte little-endian unsigned integer) and typed contents (`fill_contents`). The public client
(`modelloop.client`) encodes inputs and decodes outputs with it; the scoring server
(`modelloop.serving.codec`) decodes and checks inputs and encodes outputs with it. Errors name the tensor by
the label they are given (the server passes caller names cut short) and the problem, never the data.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

from modelloop.contract.errors import InvalidInputError
from modelloop.contract.wire._generated.inference import grpc_predict_v2_pb2 as pb

#: datatype -> (numpy little-endian dtype, InferTensorContents field; "" when only raw contents carry it)
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
    """The elements of a BYTES tensor: bytes as they are, anything else as its UTF-8 text."""
    return [v if isinstance(v, bytes) else str(v).encode() for v in array.reshape(-1)]


def encode_raw(array: np.ndarray[Any, Any], datatype: str) -> bytes:
    """Row-major little-endian bytes of `array` as `datatype` (BYTES with 4-byte length prefixes)."""
    if datatype == "BYTES":
        return b"".join(_LEN.pack(len(b)) + b for b in to_bytes_elements(array))
    return np.ascontiguousarray(array, dtype=DATATYPES[datatype][0]).tobytes()


def fill_contents(contents: pb.InferTensorContents, array: np.ndarray[Any, Any], datatype: str) -> None:
    """Put `array` into an InferTensorContents message in the field for `datatype`."""
    field = DATATYPES[datatype][1]
    if not field:
        raise InvalidInputError(f"{datatype} can only be sent as raw contents")
    target = getattr(contents, field)
    if datatype == "BYTES":
        target.extend(to_bytes_elements(array))
    else:
        target.extend(array.reshape(-1).tolist())


def decode_raw(label: str, datatype: str, payload: bytes, size: int) -> np.ndarray[Any, Any]:
    """`size` elements of `datatype` from raw contents (a 1-D array; BYTES elements as bytes objects).
    `label` names the tensor in errors as given: the caller cuts names it did not choose."""
    dtype, _ = DATATYPES[datatype]
    if datatype == "BYTES":
        return _split_bytes(label, payload, size)
    need = size * _ITEMSIZE[datatype]
    if len(payload) != need:
        raise InvalidInputError(
            f"input '{label}': raw contents hold {len(payload)} bytes; "
            f"{size} {datatype} element(s) need {need}"
        )
    return np.frombuffer(payload, dtype=dtype)


def _split_bytes(label: str, payload: bytes, size: int) -> np.ndarray[Any, Any]:
    out = np.empty(size, dtype=object)
    pos, end = 0, len(payload)
    for i in range(size):
        if pos + 4 > end:
            raise InvalidInputError(f"input '{label}': raw BYTES contents end before element {i} of {size}")
        (length,) = _LEN.unpack_from(payload, pos)
        pos += 4
        if pos + length > end:
            raise InvalidInputError(f"input '{label}': raw BYTES element {i} is longer than the data left")
        out[i] = payload[pos : pos + length]
        pos += length
    if pos != end:
        raise InvalidInputError(
            f"input '{label}': raw BYTES contents have {end - pos} bytes after {size} elements"
        )
    return out


__all__ = [
    "DATATYPES",
    "decode_raw",
    "encode_raw",
    "fill_contents",
    "numpy_datatype",
    "to_bytes_elements",
]
