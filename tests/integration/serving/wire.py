"""A hand-written protobuf wire encoder/decoder for the Open Inference Protocol messages, independent of
our generated stubs: it uses the field numbers of the published specification, so a test that talks to the
server with it proves wire compatibility with any other v2 client."""

from __future__ import annotations

import struct
from typing import Any


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field_bytes(number: int, payload: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def field_str(number: int, text: str) -> bytes:
    return field_bytes(number, text.encode())


def packed_int64(number: int, values: list[int]) -> bytes:
    return field_bytes(number, b"".join(varint(v) for v in values))


def packed_double(number: int, values: list[float]) -> bytes:
    return field_bytes(number, b"".join(struct.pack("<d", v) for v in values))


def infer_request(model: str, inputs: list[tuple[str, str, list[int], bytes]], *, request_id: str = "",
                  raw: list[bytes] | None = None, outputs: list[str] = ()) -> bytes:  # fmt: skip
    """ModelInferRequest: model_name=1, id=3, inputs=5 (name=1, datatype=2, shape=3, contents=5),
    outputs=6 (name=1), raw_input_contents=7."""
    body = field_str(1, model)
    if request_id:
        body += field_str(3, request_id)
    for name, datatype, shape, contents in inputs:
        tensor = field_str(1, name) + field_str(2, datatype) + packed_int64(3, shape)
        if contents:
            tensor += field_bytes(5, contents)
        body += field_bytes(5, tensor)
    for name in outputs:
        body += field_bytes(6, field_str(1, name))
    for chunk in raw or []:
        body += field_bytes(7, chunk)
    return body


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def parse(data: bytes) -> dict[int, list[Any]]:
    """Fields of one message: number -> values (bytes for length-delimited, int for varints)."""
    fields: dict[int, list[Any]] = {}
    pos = 0
    while pos < len(data):
        key, pos = _read_varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(data, pos)
        elif wire == 2:
            length, pos = _read_varint(data, pos)
            value, pos = data[pos : pos + length], pos + length
        elif wire == 1:
            value, pos = data[pos : pos + 8], pos + 8
        elif wire == 5:
            value, pos = data[pos : pos + 4], pos + 4
        else:
            raise ValueError(f"wire type {wire}")
        fields.setdefault(number, []).append(value)
    return fields


def unpack_varints(data: bytes) -> list[int]:
    out, pos = [], 0
    while pos < len(data):
        value, pos = _read_varint(data, pos)
        out.append(value)
    return out
