"""One chunk of input into the rows to predict on and the rows refused, with serving's validation.

Used by `batch.scoring` for every chunk. Whole-input problems (a required column missing, a column of a type
the model cannot take) raise `InvalidInputError` with the scoring server's own message, since no row could be
scored. Row problems are rejects with a reason, never dropped: a missing value where the signature requires
one, NaN in a required float column, a category unseen in training (serving's unseen-category policy, with
the known categories of the version's reference profile). The remaining rows go through
`ModelSchema.validate`, exactly as a request's tensors do, so what is predicted is what the server predicts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from modelloop.contract.errors import InvalidInputError
from modelloop.serving.errors import clip, clip_names
from modelloop.serving.schema import ACCEPTED, Column, Features, InputTensor, ModelSchema

#: Arrow type id -> Open Inference Protocol datatype (what the server's decoder would call the tensor)
_DATATYPES: dict[pa.DataType, str] = {
    pa.float64(): "FP64",
    pa.float32(): "FP32",
    pa.float16(): "FP16",
    pa.int64(): "INT64",
    pa.int32(): "INT32",
    pa.int16(): "INT16",
    pa.int8(): "INT8",
    pa.uint64(): "UINT64",
    pa.uint32(): "UINT32",
    pa.uint16(): "UINT16",
    pa.uint8(): "UINT8",
    pa.bool_(): "BOOL",
    pa.string(): "BYTES",
    pa.large_string(): "BYTES",
    pa.binary(): "BYTES",
    pa.large_binary(): "BYTES",
}
#: the Arrow type a column of each numpy dtype is read as where the input cannot say (CSV, all-null chunks)
_ARROW_TYPES: dict[str, pa.DataType] = {
    "float64": pa.float64(),
    "float32": pa.float32(),
    "int64": pa.int64(),
    "int32": pa.int32(),
    "bool": pa.bool_(),
    "object": pa.string(),
}


@dataclass(frozen=True)
class CheckedChunk:
    """A chunk split: `features` of the rows at `accepted` (None when there are none), and the rows at
    `rejected` with one reason each."""

    features: Features | None
    accepted: np.ndarray[Any, Any]
    rejected: np.ndarray[Any, Any]
    reasons: list[str]


def datatype(arrow_type: pa.DataType) -> str:
    """The Open Inference Protocol datatype of an Arrow type (its own name upper-cased when there is none)."""
    return _DATATYPES.get(arrow_type, str(arrow_type).upper())


def column_types(schema: ModelSchema) -> dict[str, pa.DataType]:
    """The Arrow type to read each model column as from text (so `"1"` stays a category, `1` a float)."""
    return {c.name: _ARROW_TYPES[c.dtype] for c in schema.columns if c.dtype in _ARROW_TYPES}


def check_columns(schema: ModelSchema, names: Sequence[str]) -> None:
    """`InvalidInputError` when the input lacks a column the model requires (the server's message)."""
    present = set(names)
    missing = [c.name for c in schema.columns if c.required and c.name not in present]
    if missing:
        raise InvalidInputError(f"missing required column(s): {clip_names(missing)}")


def _normalised(col: Column, array: pa.Array) -> pa.Array:
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    if pa.types.is_null(array.type):
        array = array.cast(_ARROW_TYPES.get(col.dtype, pa.float64()))
    return array


def _row_reasons(
    schema: ModelSchema,
    col: Column,
    array: pa.Array,
    reasons: np.ndarray[Any, Any],
    bad: np.ndarray[Any, Any],
) -> None:
    """Write the first reason a row of `array` is refused into `reasons`, marking it in `bad`."""
    if datatype(array.type) not in ACCEPTED[col.kind]:
        return  # the whole column is refused by `validate`, with its message
    name = clip(col.name)
    if array.null_count and (col.required or col.kind in ("int", "bool")):
        nulls = np.asarray(array.is_null().to_numpy(zero_copy_only=False)) & ~bad
        reasons[nulls] = f"column '{name}' has no value; the schema requires one"
        bad |= nulls
    if col.kind == "float" and col.required:
        nan = (
            np.asarray(
                pc.fill_null(pc.is_nan(array.cast(pa.float64())), False).to_numpy(zero_copy_only=False)
            )
            & ~bad
        )
        reasons[nan] = f"column '{name}' contains NaN; the schema requires a value"
        bad |= nan
    elif col.kind == "string" and col.name in schema.categories:
        known = pa.array(sorted(schema.categories[col.name]), type=pa.string())
        seen = pc.is_in(array.cast(pa.string()), value_set=known)
        unseen = ~np.asarray(pc.fill_null(seen, True).to_numpy(zero_copy_only=False)) & ~bad
        reasons[unseen] = f"column '{name}' has a value that is not a category seen in training"
        bad |= unseen


def check_chunk(schema: ModelSchema, batch: pa.RecordBatch) -> CheckedChunk:
    """Split `batch` into validated rows and rejects (see the module docstring)."""
    n = batch.num_rows
    names = set(batch.schema.names)
    columns = {c.name: _normalised(c, batch.column(c.name)) for c in schema.columns if c.name in names}
    reasons = np.full(n, None, dtype=object)
    bad = np.zeros(n, dtype=bool)
    for col in schema.columns:
        if col.name in columns:
            _row_reasons(schema, col, columns[col.name], reasons, bad)
    accepted = np.flatnonzero(~bad)
    rejected = np.flatnonzero(bad)
    features = None
    if accepted.size:
        take = None if accepted.size == n else pa.array(accepted)
        tensors = []
        for name, array in columns.items():
            kept = array if take is None else array.take(take)
            data = np.asarray(kept.to_numpy(zero_copy_only=False))
            tensors.append(InputTensor(name, datatype(array.type), (int(accepted.size),), data))
        features = schema.validate(tensors, reject_unseen=True)
    return CheckedChunk(features, accepted, rejected, [str(r) for r in reasons[rejected]])


__all__ = ["CheckedChunk", "check_chunk", "check_columns", "column_types", "datatype"]
