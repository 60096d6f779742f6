"""What a hosted model takes and gives, derived from its MLflow signature, and the validation of inputs.

Called by `serving.model_host` when a version loads (`ModelSchema.from_signature`) and by `serving.core` for
every request, through the transport's `RequestInputs` (`serving.codec` for the Open Inference Protocol):
one 1-D tensor per signature column, named after it, or one 2-D tensor for a model whose columns are all
numeric. The result is `Features`, the form a batch is predicted on.

Two ways there, with the same result. `ModelSchema.validate` checks transport-neutral `InputTensor`s one by
one and builds every error message. `ColumnLayout` is the fast path: precomputed once per loaded version and
request structure (which tensor carries which column, of which type, how many rows) by the transport's
decoder, it assembles columns decoded in bulk with no per-column work but for string columns; whenever it
finds something to object to it gives up and the decoder takes `validate`, so errors are its alone. Every
error names the column (cut by `modelloop.serving.errors.clip`) and the problem and never echoes a value.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal, Protocol

import numpy as np

from modelloop.contract.errors import InvalidInputError

from .errors import ModelLoadError, OversizedInputError, clip, clip_names

Kind = Literal["float", "int", "bool", "string"]

#: MLflow column type -> (kind, Open Inference Protocol datatype, numpy dtype the model is fed)
_MLFLOW_TYPES: dict[str, tuple[Kind, str, str]] = {
    "double": ("float", "FP64", "float64"),
    "float": ("float", "FP32", "float32"),
    "long": ("int", "INT64", "int64"),
    "integer": ("int", "INT32", "int32"),
    "boolean": ("bool", "BOOL", "bool"),
    "string": ("string", "BYTES", "object"),
    "binary": ("string", "BYTES", "object"),
}

_INT_TYPES = {"INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"}
_FLOAT_TYPES = {"FP16", "FP32", "FP64"}
#: which request datatypes each column kind accepts (ints widen to floats; nothing else converts)
ACCEPTED: dict[Kind, frozenset[str]] = {
    "float": frozenset(_FLOAT_TYPES | _INT_TYPES),
    "int": frozenset(_INT_TYPES),
    "bool": frozenset({"BOOL"}),
    "string": frozenset({"BYTES"}),
}


@dataclass(frozen=True)
class InputTensor:
    """One decoded request tensor: name, OIP datatype, shape, and its elements (flat numpy array)."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray[Any, Any]


@dataclass(frozen=True)
class Column:
    name: str
    kind: Kind
    datatype: str
    dtype: str
    required: bool


@dataclass
class Features:
    """Validated rows: a float64 matrix (all-float models, the fast path) or one array per column (a dict, or
    the bulk decoder's `ColumnBlocks`)."""

    n_rows: int
    matrix: np.ndarray[Any, Any] | None = None
    columns: Mapping[str, np.ndarray[Any, Any]] = field(default_factory=dict)

    def as_columns(self, names: Sequence[str]) -> Mapping[str, np.ndarray[Any, Any]]:
        if self.matrix is not None:
            return {name: self.matrix[:, i] for i, name in enumerate(names)}
        return self.columns

    @staticmethod
    def concat(parts: Sequence[Features]) -> Features:
        if len(parts) == 1:
            return parts[0]
        n = sum(p.n_rows for p in parts)
        if parts[0].matrix is not None:
            return Features(n, matrix=np.concatenate([p.matrix for p in parts if p.matrix is not None]))
        joined = ColumnBlocks.join([p.columns for p in parts])
        if joined is not None:
            return Features(n, columns=joined)
        names = parts[0].columns.keys()
        return Features(n, columns={k: np.concatenate([p.columns[k] for p in parts]) for k in names})


class ColumnBlocks(Mapping[str, np.ndarray[Any, Any]]):
    """Columns as the bulk decoder leaves them (`ColumnLayout.assemble`): numeric columns as the rows of one
    2-D block per datatype, string columns on their own. A column's array (a view) is made when it is read, by
    the predict function once per batch rather than for every request; `Features.concat` joins blocks."""

    __slots__ = ("blocks", "layout", "strings")

    def __init__(
        self,
        layout: ColumnLayout,
        blocks: Sequence[np.ndarray[Any, Any]],
        strings: Sequence[np.ndarray[Any, Any]],
    ) -> None:
        self.layout = layout
        self.blocks = blocks
        self.strings = strings

    def __getitem__(self, name: str) -> np.ndarray[Any, Any]:
        block, row = self.layout.place[name]
        return self.blocks[block][row] if block >= 0 else self.strings[row]

    def __iter__(self) -> Iterator[str]:
        return iter(self.layout.schema.names)

    def __len__(self) -> int:
        return len(self.layout.schema.columns)

    @staticmethod
    def join(parts: Sequence[Mapping[str, np.ndarray[Any, Any]]]) -> ColumnBlocks | None:
        """The rows of `parts` one after another, when all are blocks placed alike; else None."""
        first = parts[0]
        if not isinstance(first, ColumnBlocks):
            return None
        form = first.layout.form
        alike = [p for p in parts if isinstance(p, ColumnBlocks) and p.layout.form == form]
        if len(alike) != len(parts):
            return None
        blocks = [np.concatenate(arrays, axis=1) for arrays in zip(*(p.blocks for p in alike), strict=True)]
        strings = [np.concatenate(arrays) for arrays in zip(*(p.strings for p in alike), strict=True)]
        return ColumnBlocks(first.layout, blocks, strings)


@dataclass(frozen=True)
class ModelSchema:
    """Inputs (one column each) and outputs of a model, from its MLflow signature."""

    columns: tuple[Column, ...]
    prediction_datatype: str
    classes: tuple[Any, ...] | None = None
    #: known categories of string columns (from the reference profile), for the unseen-category check
    categories: Mapping[str, frozenset[str]] = field(default_factory=dict)
    max_rows: int = 100_000
    #: per-version memo of the transports' request decoders (`serving.codec` keeps its plans here, bounded)
    decoders: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    @cached_property
    def names(self) -> list[str]:
        """Column names in signature order (computed once: read on every request; do not mutate)."""
        return [c.name for c in self.columns]

    @cached_property
    def positions(self) -> dict[str, int]:
        """Column name -> its position in the signature (computed once; do not mutate)."""
        return {c.name: i for i, c in enumerate(self.columns)}

    @cached_property
    def all_float(self) -> bool:
        return all(c.kind == "float" for c in self.columns)

    @cached_property
    def all_numeric(self) -> bool:
        return all(c.kind in ("float", "int") for c in self.columns)

    @cached_property
    def _matrix_datatypes(self) -> frozenset[str]:
        """Datatypes every column accepts (a 2-D input of one of these needs no per-column check)."""
        return (
            frozenset.intersection(*(ACCEPTED[c.kind] for c in self.columns)) if self.columns else frozenset()
        )

    @classmethod
    def from_signature(
        cls,
        signature: Any,
        *,
        classes: Sequence[Any] | None = None,
        categories: Mapping[str, frozenset[str]] | None = None,
        max_rows: int = 100_000,
    ) -> ModelSchema:
        if signature is None or signature.inputs is None:
            raise ModelLoadError("model has no signature: log it with one so inputs can be validated")
        if not signature.inputs.has_input_names():
            raise ModelLoadError("model signature has unnamed tensor inputs; a tabular signature is needed")
        columns = []
        for spec in signature.inputs.inputs:
            type_name = str(getattr(spec.type, "name", spec.type))
            if type_name not in _MLFLOW_TYPES:
                raise ModelLoadError(f"signature column '{clip(spec.name)}' has unsupported type {type_name}")
            kind, datatype, dtype = _MLFLOW_TYPES[type_name]
            columns.append(Column(spec.name, kind, datatype, dtype, bool(getattr(spec, "required", True))))
        prediction_datatype = "FP64"
        if signature.outputs is not None and signature.outputs.inputs:
            prediction_datatype = _output_datatype(signature.outputs.inputs[0])
        return cls(
            columns=tuple(columns),
            prediction_datatype=prediction_datatype,
            classes=tuple(classes) if classes is not None else None,
            categories=dict(categories or {}),
            max_rows=max_rows,
        )

    # validation -------------------------------------------------------------------------------------------

    def validate(self, tensors: Sequence[InputTensor], *, reject_unseen: bool = True) -> Features:
        """Check request tensors against the signature; returns the rows to predict on."""
        if not tensors:
            raise InvalidInputError("request has no inputs")
        names = self.names
        if len(tensors) == 1 and tensors[0].name not in names and len(tensors[0].shape) == 2:
            return self._validate_matrix(tensors[0], reject_unseen=reject_unseen)
        by_name: dict[str, InputTensor] = {}
        for t in tensors:
            if t.name in by_name:
                raise InvalidInputError(f"input '{clip(t.name)}' given more than once")
            by_name[t.name] = t
        unknown = sorted(set(by_name) - set(names))
        if unknown:
            raise InvalidInputError(f"unknown column(s): {clip_names(unknown)}; the model takes {len(names)}")
        missing = [c.name for c in self.columns if c.required and c.name not in by_name]
        if missing:
            raise InvalidInputError(f"missing required column(s): {clip_names(missing)}")
        n_rows = -1
        first = ""
        for t in tensors:
            if len(t.shape) not in (1, 2) or (len(t.shape) == 2 and t.shape[1] != 1):
                raise InvalidInputError(
                    f"column '{clip(t.name)}' has shape {clip(list(t.shape))}; expected [rows] or [rows, 1]"
                )
            if n_rows < 0:
                n_rows, first = t.shape[0], t.name
            elif t.shape[0] != n_rows:
                raise InvalidInputError(
                    f"column '{clip(t.name)}' has {t.shape[0]} rows but column '{clip(first)}' has {n_rows}"
                )
        self._check_rows(n_rows)
        out: dict[str, np.ndarray[Any, Any]] = {}
        for col in self.columns:
            given = by_name.get(col.name)
            out[col.name] = (
                self._column(col, given, reject_unseen=reject_unseen)
                if given is not None
                else _missing_column(col, n_rows)
            )
        if self.all_float:
            return Features(
                n_rows, matrix=np.column_stack([out[n] for n in names]).astype(np.float64, copy=False)
            )
        return Features(n_rows, columns=out)

    def _check_rows(self, n_rows: int) -> None:
        if n_rows == 0:
            raise InvalidInputError("request has no rows")
        if n_rows > self.max_rows:
            raise OversizedInputError(f"request has {n_rows} rows; at most {self.max_rows} are allowed")

    def _validate_matrix(self, t: InputTensor, *, reject_unseen: bool) -> Features:
        """One 2-D tensor [rows, columns] in signature order, for a model whose columns are all numeric."""
        names = self.names
        if not self.all_numeric:
            raise InvalidInputError(
                f"input '{clip(t.name)}' is not a column of the model; a single 2-D input is only accepted "
                "when every column is numeric: send one input per column"
            )
        if t.datatype not in self._matrix_datatypes:
            for c in self.columns:
                if t.datatype not in ACCEPTED[c.kind]:
                    raise InvalidInputError(
                        f"input '{clip(t.name)}' has datatype {t.datatype}; column '{clip(c.name)}' expects "
                        f"{c.datatype}: send a tensor of that type or one input per column"
                    )
        n_rows, n_cols = t.shape
        if n_cols != len(names):
            raise InvalidInputError(
                f"input '{clip(t.name)}' has {n_cols} columns; "
                f"the model takes {len(names)} ({clip(names[0])}, ...)"
            )
        self._check_rows(n_rows)
        if not self.all_float:  # integer columns: each checked and converted like a column input
            data = t.data.reshape(n_rows, n_cols)
            return Features(
                n_rows,
                columns={
                    c.name: self._column(
                        c, InputTensor(c.name, t.datatype, (n_rows,), data[:, i]), reject_unseen=reject_unseen
                    )
                    for i, c in enumerate(self.columns)
                },
            )
        matrix = t.data.reshape(n_rows, n_cols).astype(np.float64, copy=False)
        if matrix.size and math.isnan(
            matrix.min()
        ):  # NaN propagates through min: the per-column check only when needed
            nan_cols: list[bool] = np.asarray(np.isnan(matrix).any(axis=0)).tolist()
            required = [c.name for c, bad in zip(self.columns, nan_cols, strict=True) if bad and c.required]
            if required:
                raise InvalidInputError(
                    f"column(s) {clip_names(required)} contain NaN; the schema requires a value"
                )
        return Features(n_rows, matrix=matrix)

    def _column(self, col: Column, t: InputTensor, *, reject_unseen: bool) -> np.ndarray[Any, Any]:
        if t.datatype not in ACCEPTED[col.kind]:
            raise InvalidInputError(
                f"column '{clip(col.name)}' has datatype {t.datatype}; the model expects {col.datatype}"
            )
        data = t.data.reshape(-1)
        if col.kind == "float":
            data = data.astype(np.float64 if col.dtype == "float64" else np.float32, copy=False)
            if col.required and np.isnan(data).any():
                raise InvalidInputError(
                    f"column '{clip(col.name)}' contains NaN; the schema requires a value"
                )
        elif col.kind == "int":
            if t.datatype == "UINT64" and col.dtype == "int64" and (data > np.iinfo(np.int64).max).any():
                raise InvalidInputError(f"column '{clip(col.name)}' has values out of range for INT64")
            data = data.astype(col.dtype, copy=False)
        elif col.kind == "string":
            data = _decode_strings(col.name, data)
            known = self.categories.get(col.name)
            if known is not None and reject_unseen:
                unseen = int(sum(1 for v in data if v not in known))
                if unseen:
                    raise InvalidInputError(
                        f"column '{clip(col.name)}' has {unseen} value(s) that are not categories seen in "
                        "training"
                    )
        return data


class ColumnLayout:
    """Where a model's columns are in the requests of one structure: the fast path (see the module docstring).

    The structure: every signature column sent once, each as the datatype the schema gives it, `n_rows` rows.
    A transport's decoder builds one per loaded version and structure, once `validate` accepted a request of
    it, and hands `assemble` each request's columns decoded in bulk: `blocks`, one 2-D array per group of
    numeric columns (a row per column: signature positions `block_columns`), and `strings`, the elements of
    the string columns as bytes (signature positions `string_columns`)."""

    def __init__(
        self,
        schema: ModelSchema,
        n_rows: int,
        block_columns: Sequence[Sequence[int]],
        string_columns: Sequence[int] = (),
    ) -> None:
        self.schema = schema
        self.n_rows = n_rows
        self.block_columns = tuple(tuple(b) for b in block_columns)
        self.string_columns = tuple(schema.columns[i] for i in string_columns)
        self._indices = [np.asarray(b, dtype=np.intp) for b in self.block_columns]
        # blocks holding a required float column: a NaN there sends the request to `validate`
        self._nan_checked = [
            i
            for i, b in enumerate(self.block_columns)
            if any(schema.columns[c].kind == "float" and schema.columns[c].required for c in b)
        ]
        order = [c for b in self.block_columns for c in b] + list(string_columns)
        if sorted(order) != list(range(len(schema.columns))):
            raise ValueError("a layout places every column of the schema exactly once")
        self._whole = len(self.block_columns) == 1 and order == sorted(order)
        #: column name -> (block, row in it), or (-1, position among the string columns)
        self.place = {
            schema.columns[c].name: (b, r)
            for b, cols in enumerate(self.block_columns)
            for r, c in enumerate(cols)
        }
        self.place.update({col.name: (-1, r) for r, col in enumerate(self.string_columns)})
        #: layouts of one form place every column alike (the request's own order does not matter)
        self.form = (self.block_columns, tuple(col.name for col in self.string_columns))

    def assemble(
        self,
        blocks: Sequence[np.ndarray[Any, Any]],
        strings: Sequence[np.ndarray[Any, Any]] = (),
        *,
        reject_unseen: bool = True,
    ) -> Features | None:
        """The rows to predict on, or None when `validate` must look (NaN in a required float column); raises
        InvalidInputError for a string column `validate` would refuse."""
        for i in self._nan_checked:
            if math.isnan(np.vdot(blocks[i], blocks[i])):  # a sum of squares is NaN only for a NaN in it
                return None
        n, schema = self.n_rows, self.schema
        if schema.all_float:
            if self._whole:
                return Features(n, matrix=np.ascontiguousarray(blocks[0].T, dtype=np.float64))
            matrix = np.empty((n, len(schema.columns)))
            for block, index in zip(blocks, self._indices, strict=True):  # one pass per datatype
                matrix[:, index] = block.T
            return Features(n, matrix=matrix)
        decoded = [  # string columns only
            schema._column(col, InputTensor(col.name, "BYTES", (n,), data), reject_unseen=reject_unseen)
            for col, data in zip(self.string_columns, strings, strict=True)
        ]
        return Features(n, columns=ColumnBlocks(self, blocks, decoded))


class RequestInputs(Protocol):
    """A request's inputs as a transport received them, turned into rows against the schema of the version
    that answers (known only after routing): `serving.codec.OipInputs`, or `TensorInputs`."""

    def features(self, schema: ModelSchema, *, reject_unseen: bool) -> Features:
        """The rows to predict on; InvalidInputError (naming the column) for inputs the schema refuses."""
        ...

    def check(self) -> None:
        """Raise InvalidInputError for inputs malformed whatever the model (reported before routing
        errors)."""
        ...


@dataclass(frozen=True)
class TensorInputs:
    """Inputs already decoded into `InputTensor`s (tests, and transports without a fast path)."""

    tensors: Sequence[InputTensor]

    def features(self, schema: ModelSchema, *, reject_unseen: bool) -> Features:
        return schema.validate(self.tensors, reject_unseen=reject_unseen)

    def check(self) -> None:
        return None


def _decode_strings(name: str, data: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    out = np.empty(len(data), dtype=object)
    try:
        for i, v in enumerate(data):
            out[i] = v.decode("utf-8") if isinstance(v, bytes) else str(v)
    except UnicodeDecodeError:
        raise InvalidInputError(f"column '{clip(name)}' holds bytes that are not valid UTF-8") from None
    return out


def _missing_column(col: Column, n_rows: int) -> np.ndarray[Any, Any]:
    if col.kind == "float":
        return np.full(n_rows, np.nan, dtype=col.dtype)
    if col.kind == "string":
        return np.full(n_rows, None, dtype=object)
    raise InvalidInputError(f"missing column '{clip(col.name)}' has no missing-value representation")


def _output_datatype(spec: Any) -> str:
    raw = getattr(spec, "type", None)
    if raw is None:
        return "FP64"
    if hasattr(raw, "kind"):  # TensorSpec: a numpy dtype
        dtype = np.dtype(raw)
        return {
            "f": "FP64" if dtype.itemsize == 8 else "FP32",
            "i": "INT64" if dtype.itemsize == 8 else "INT32",
            "u": "UINT64",
            "b": "BOOL",
        }.get(dtype.kind, "BYTES")
    name = str(getattr(raw, "name", raw))
    return _MLFLOW_TYPES.get(name, ("float", "FP64", "float64"))[1]


__all__ = [
    "ACCEPTED",
    "Column",
    "ColumnLayout",
    "Features",
    "InputTensor",
    "ModelSchema",
    "RequestInputs",
    "TensorInputs",
]
