"""Open Inference Protocol request inputs -> the rows a model predicts on: the server's side of the codec.

Called by the gRPC adapter (`modelloop.serving.grpc_server`), which wraps every `ModelInferRequest` in
`OipInputs`; the core (`serving.core`) asks it for the rows once it knows which version answers.

Two paths, one result. The detailed one, `decode_inputs`, checks what only a server must check (datatype
names, shapes, one kind of contents per tensor, typed contents of the right field and size), decodes each
tensor with the wire's codec (`modelloop.contract.wire.codec`) and leaves the rest to
`ModelSchema.validate`; its errors name the input (cut by `serving.errors.clip`) and the problem, never the
data. The fast one costs no Python work per column: once a request of some structure (names, datatypes,
shapes, order of the tensors; every column sent once as the datatype the signature gives it) has passed the
detailed path, a plan for that structure is kept per loaded version (`ModelSchema.decoders`, bounded), and
later requests of the same structure are recognised by their serialised `inputs` field (one copy and one
serialisation in C) and decoded in bulk:
- raw contents: the serialised inputs (names, datatypes, shapes: no data) are the key, the payload lengths are
  checked against the plan's in one comparison; the payloads of each datatype are joined in signature order
  and read by one `np.frombuffer`;
- typed FP64/FP32 contents (requests up to 64 KiB of inputs): a canonical tensor ends with its packed
  little-endian values, so the serialised inputs are compared, all but the value bytes, with the plan's
  template in one operation, and the value bytes are read as one array.
Strings (BYTES) are decoded per string column only; the columns of a model that is not all-float stay in
their blocks (`schema.ColumnBlocks`) until a batch is predicted. Anything the fast path would object to
(NaN, a bad string, a structure it has no plan for) sends the request down the detailed path, so every
error is that path's.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from operator import itemgetter
from typing import Any

import numpy as np

from modelloop.contract.errors import InvalidInputError
from modelloop.contract.wire._generated.inference import grpc_predict_v2_pb2 as pb
from modelloop.contract.wire.codec import DATATYPES, decode_raw

from .errors import clip
from .schema import ColumnLayout, Features, InputTensor, ModelSchema

#: request structures remembered per loaded version and kind of contents (callers choose them: bounded)
_MAX_PLANS = 64
_MAX_TYPED_MISSES = 4
#: largest serialised typed inputs given a plan (its template indexes every byte; a larger request spends
#: little per column anyway)
_MAX_TYPED_BYTES = 1 << 16
#: typed contents whose values are fixed-width and packed: the last bytes of a canonical serialised tensor
_FIXED_WIDTH = {"FP64": 8, "FP32": 4}


def _shape(name: str, shape: Sequence[int]) -> tuple[int, ...]:
    dims = tuple(shape)  # int64 values already
    if not dims or min(dims) < 0:
        raise InvalidInputError(
            f"input '{clip(name)}' has shape {clip(list(dims))}; every dimension must be given and >= 0"
        )
    return dims


def decode_inputs(request: pb.ModelInferRequest) -> list[InputTensor]:
    """The inputs of a `ModelInferRequest` as numpy arrays (typed or raw contents): the detailed path."""
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
            data = decode_raw(clip(name), datatype, raw[i], size)
        else:
            data = _decode_typed(name, datatype, tensor.contents, size)
        tensors.append(InputTensor(name, datatype, shape, data))
    return tensors


def _decode_typed(
    name: str, datatype: str, contents: pb.InferTensorContents, size: int
) -> np.ndarray[Any, Any]:
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


class OipInputs:
    """The inputs of one `ModelInferRequest` (`schema.RequestInputs`; see the module docstring)."""

    __slots__ = ("_tensors", "request")

    def __init__(self, request: pb.ModelInferRequest) -> None:
        self.request = request
        self._tensors: list[InputTensor] | None = None

    def tensors(self) -> list[InputTensor]:
        """Every input decoded and checked on its own (the detailed path; decoded once)."""
        if self._tensors is None:
            self._tensors = decode_inputs(self.request)
        return self._tensors

    def check(self) -> None:
        self.tensors()

    def features(self, schema: ModelSchema, *, reject_unseen: bool) -> Features:
        plans: _Plans | None = schema.decoders.get("oip")
        if plans is None:
            plans = schema.decoders.setdefault("oip", _Plans())
        request = self.request
        inputs = _inputs_only(request)
        if request.raw_input_contents:
            raw = list(request.raw_input_contents)  # one bytes object per payload, made once
            plan = plans.raw.get(inputs, _MISSING)
            if plan is _MISSING:
                features = schema.validate(self.tensors(), reject_unseen=reject_unseen)
                plans.learn_raw(inputs, schema, self.tensors())
                return features
            fast = plan.features(raw, reject_unseen) if plan is not None else None
        else:
            fast = None
            for typed in plans.typed.get(len(inputs), ()):
                values = typed.values(inputs)
                if values is not None:
                    fast = typed.features(values)
                    break
            else:
                features = schema.validate(self.tensors(), reject_unseen=reject_unseen)
                plans.learn_typed(inputs, schema, request, self.tensors())
                return features
        return fast if fast is not None else schema.validate(self.tensors(), reject_unseen=reject_unseen)


def _inputs_only(request: pb.ModelInferRequest) -> bytes:
    """The request's `inputs` field serialised alone (names, datatypes, shapes, typed contents; one copy and
    one serialisation in C, no Python work per tensor)."""
    inputs = pb.ModelInferRequest()
    inputs.CopyFrom(request)
    for name in _NOT_INPUTS:
        inputs.ClearField(name)
    return inputs.SerializeToString()


_NOT_INPUTS = ("model_name", "model_version", "id", "parameters", "outputs", "raw_input_contents")
_MISSING: Any = object()


def _columns_of(schema: ModelSchema, tensors: Sequence[InputTensor]) -> list[int] | None:
    """Signature positions of validated tensors that send every column once, each as its own datatype."""
    positions = schema.positions
    if len(tensors) != len(schema.columns):
        return None
    found = [positions.get(t.name, -1) for t in tensors]
    if -1 in found or len(set(found)) != len(found):
        return None
    if any(t.datatype != schema.columns[p].datatype for t, p in zip(tensors, found, strict=True)):
        return None
    return found


def _is_matrix(schema: ModelSchema, tensors: Sequence[InputTensor]) -> bool:
    """One validated 2-D tensor holding every column of an all-float model."""
    return (
        len(tensors) == 1
        and tensors[0].name not in schema.positions
        and len(tensors[0].shape) == 2
        and schema.all_float
    )


def _picker(indices: Sequence[int]) -> Callable[[Sequence[Any]], tuple[Any, ...]]:
    """`itemgetter(*indices)`, giving a tuple for one index too."""
    if len(indices) == 1:
        (only,) = indices
        return lambda items: (items[only],)
    return itemgetter(*indices)


class _RawPlan:
    """Raw contents of one structure -> rows: a join and a `frombuffer` per datatype, strings per column."""

    def __init__(self, schema: ModelSchema, tensors: Sequence[InputTensor]) -> None:
        n = tensors[0].shape[0]
        self.n = n
        self.labels = [clip(t.name) for t in tensors]
        # the byte length each fixed-width payload must have (BYTES payloads are checked as they are split)
        fixed = [i for i, t in enumerate(tensors) if t.datatype != "BYTES"]
        self.count = len(tensors)
        self.sized = None if len(fixed) == len(tensors) else _picker(fixed)
        self.lengths = tuple(t.data.nbytes for t in tensors if t.datatype != "BYTES")
        if _is_matrix(schema, tensors):
            self.matrix_dtype: str | None = DATATYPES[tensors[0].datatype][0]
            self.layout = ColumnLayout(schema, n, [range(len(schema.columns))])
            return
        self.matrix_dtype = None
        found = _columns_of(schema, tensors)
        if found is None:
            raise ValueError("no plan for this structure")
        by_type: dict[str, list[int]] = {}
        strings: list[int] = []
        in_order = sorted(range(len(tensors)), key=found.__getitem__)  # request indices, signature order
        for i in in_order:
            datatype = tensors[i].datatype
            (strings if datatype == "BYTES" else by_type.setdefault(datatype, [])).append(i)
        whole = len(by_type) == 1 and not strings and in_order == list(range(len(tensors)))
        self.groups: list[tuple[Callable[[Sequence[bytes]], Sequence[bytes]] | None, str, int]] = [
            (None if whole else _picker(idx), DATATYPES[dt][0], len(idx)) for dt, idx in by_type.items()
        ]
        self.strings = strings
        self.layout = ColumnLayout(
            schema, n, [[found[i] for i in idx] for idx in by_type.values()], [found[i] for i in strings]
        )

    def features(self, raw: Sequence[bytes], reject_unseen: bool) -> Features | None:
        n = self.n
        if len(raw) != self.count:
            return None
        if tuple(map(len, raw if self.sized is None else self.sized(raw))) != self.lengths:
            return None
        try:
            if self.matrix_dtype is not None:
                return self.layout.assemble([np.frombuffer(raw[0], self.matrix_dtype).reshape(n, -1).T])
            blocks = [
                np.frombuffer(b"".join(raw if pick is None else pick(raw)), dtype).reshape(k, n)
                for pick, dtype, k in self.groups
            ]
            strings = [decode_raw(self.labels[i], "BYTES", raw[i], n) for i in self.strings]
            return self.layout.assemble(blocks, strings, reject_unseen=reject_unseen)
        except InvalidInputError:
            return None  # the detailed path says what is wrong


class _TypedPlan:
    """Typed FP64/FP32 contents of one structure -> rows: the serialised inputs are checked against a template
    and their value bytes read as one array (see the module docstring)."""

    def __init__(
        self,
        schema: ModelSchema,
        tensors: Sequence[InputTensor],
        request: pb.ModelInferRequest,
        inputs: bytes,
    ) -> None:
        datatypes = {t.datatype for t in tensors}
        if len(datatypes) != 1 or not datatypes <= _FIXED_WIDTH.keys():
            raise ValueError("no plan for this structure")
        (datatype,) = datatypes
        width = _FIXED_WIDTH[datatype]
        values = np.zeros(len(inputs), dtype=bool)
        end = 0
        for t, message in zip(tensors, request.inputs, strict=True):  # once per structure
            entry = _canonical_entry(t, message)
            end += len(entry)
            values[end - width * t.data.size : end] = True
        if end != len(inputs):  # something else in the request's serialisation (unknown fields)
            raise ValueError("no plan for this structure")
        self.value_index = np.flatnonzero(values)
        self.fixed_index = np.flatnonzero(~values)
        self.fixed = np.frombuffer(inputs, np.uint8)[self.fixed_index].tobytes()
        self.dtype = DATATYPES[datatype][0]
        self.n = tensors[0].shape[0]
        self.matrix = _is_matrix(schema, tensors)
        self.order: list[int] | None = None
        if not self.matrix:
            found = _columns_of(schema, tensors)
            if found is None:
                raise ValueError("no plan for this structure")
            order = sorted(range(len(tensors)), key=found.__getitem__)
            self.order = None if order == list(range(len(tensors))) else order
        self.layout = ColumnLayout(schema, self.n, [range(len(schema.columns))])

    def values(self, inputs: bytes) -> np.ndarray[Any, Any] | None:
        """The value bytes of serialised inputs of this structure as one array (request order), else None."""
        data = np.frombuffer(inputs, np.uint8)
        if data[self.fixed_index].tobytes() != self.fixed:
            return None
        return data[self.value_index].view(self.dtype)

    def features(self, values: np.ndarray[Any, Any]) -> Features | None:
        if self.matrix:
            return self.layout.assemble([values.reshape(self.n, -1).T])
        block = values.reshape(-1, self.n)
        return self.layout.assemble([block if self.order is None else block[self.order]])


def _canonical_entry(t: InputTensor, message: pb.ModelInferRequest.InferInputTensor) -> bytes:
    """The `inputs` entry of a tensor (tag, length, message), when its message is exactly name, datatype,
    shape and its values in the datatype's field (no parameters, no unknown fields): its values end it."""
    canonical = pb.ModelInferRequest.InferInputTensor(name=t.name, datatype=t.datatype, shape=list(t.shape))
    getattr(canonical.contents, DATATYPES[t.datatype][1]).extend(t.data.tolist())
    if canonical.SerializeToString() != message.SerializeToString():
        raise ValueError("no plan for this structure")
    return pb.ModelInferRequest(inputs=[canonical]).SerializeToString()


class _Plans:
    """The plans of one loaded version (see the module docstring); used from the event loop only."""

    def __init__(self) -> None:
        self.raw: dict[Any, _RawPlan | None] = {}
        self.typed: dict[int, list[_TypedPlan]] = {}
        #: typed structures found to have no plan, by serialised length: after a few, a length is not tried
        #: again (a typed key holds values, so the structure itself cannot be remembered)
        self.typed_misses: dict[int, int] = {}

    def learn_raw(self, key: Any, schema: ModelSchema, tensors: Sequence[InputTensor]) -> None:
        if len(self.raw) >= _MAX_PLANS:
            self.raw.clear()
        try:
            self.raw[key] = _RawPlan(schema, tensors)
        except ValueError:
            self.raw[key] = None  # valid, but no fast path for it: not looked at again

    def learn_typed(
        self,
        inputs: bytes,
        schema: ModelSchema,
        request: pb.ModelInferRequest,
        tensors: Sequence[InputTensor],
    ) -> None:
        size = len(inputs)
        if size > _MAX_TYPED_BYTES or self.typed_misses.get(size, 0) >= _MAX_TYPED_MISSES:
            return
        if sum(map(len, self.typed.values())) + len(self.typed_misses) >= _MAX_PLANS:
            self.typed.clear()
            self.typed_misses.clear()
        try:
            plan = _TypedPlan(schema, tensors, request, inputs)
        except ValueError:
            self.typed_misses[size] = self.typed_misses.get(size, 0) + 1
            return
        self.typed.setdefault(size, []).append(plan)


__all__ = ["OipInputs", "decode_inputs"]
