"""Every request form answers exactly what the model answers (issue 14), in-process through the real servicer,
core, host and batcher: one 2-D tensor (typed and raw), one tensor per column (raw, as `modelloop.client`
sends; typed, as ModelMetadata advertises), in the signature's order and shuffled, one row and several, and a
mixed-type model (float, integer, boolean and string columns). The bulk decoder (`serving.codec`) takes over
from the second request of a structure; invalid requests get the detailed path's errors, whether a plan was
learned or not."""

from __future__ import annotations

import asyncio
import copy
import struct
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest
from mlflow.models import infer_signature
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from modelloop.client import build_request, decode_outputs
from modelloop.contract.errors import InvalidInputError, NotFoundError
from modelloop.contract.wire._generated.inference import grpc_predict_v2_pb2 as pb
from modelloop.contract.wire.codec import encode_raw
from modelloop.serving.codec import OipInputs, decode_inputs
from modelloop.serving.core import InferenceCore
from modelloop.serving.grpc_server import InferenceServicer
from modelloop.serving.hosting import ModelHost
from modelloop.serving.metrics import ServingMetrics
from modelloop.serving.model_host import LoadedModel, sklearn_predictor, warm_up
from modelloop.serving.schema import ColumnBlocks, Features, ModelSchema, TensorInputs

SECRET = 987654.125
COLORS = ["red", "green", "blue"]


class Hosted:
    """A fitted pipeline served in-process, and a copy of it taken before serving touched it (the matrix path
    drops the fitted column names) to give the model's own answers on DataFrames."""

    def __init__(self, name: str, pipe: Any, x: pd.DataFrame, categories: dict[str, frozenset[str]]) -> None:
        self.name, self.x = name, x
        self.own = copy.deepcopy(pipe)
        self.rows = x.sample(frac=1.0, random_state=3).head(12).reset_index(drop=True)
        schema = ModelSchema.from_signature(
            infer_signature(x, pipe.predict(x)), classes=list(pipe.classes_), categories=categories
        )
        self.loaded = LoadedModel(name, "1", schema, "sklearn", sklearn_predictor(pipe, schema))
        warm_up(self.loaded)

    @property
    def schema(self) -> ModelSchema:
        return self.loaded.schema


def _breast_cancer() -> pd.DataFrame:
    x = load_breast_cancer(as_frame=True).data
    x.columns = [c.replace(" ", "_") for c in x.columns]
    return x


@pytest.fixture(scope="module")
def reference() -> Hosted:
    x = _breast_cancer()
    y = load_breast_cancer().target
    pipe = Pipeline([("scale", StandardScaler()), ("model", HistGradientBoostingClassifier(max_iter=10))])
    return Hosted("ref", pipe.fit(x, y), x, {})


@pytest.fixture(scope="module")
def linear() -> Hosted:
    x = _breast_cancer()
    y = load_breast_cancer().target
    pipe = Pipeline([("scale", StandardScaler()), ("model", LogisticRegression(max_iter=500))])
    return Hosted("linear", pipe.fit(x, y), x, {})


@pytest.fixture(scope="module")
def mixed() -> Hosted:
    rng = np.random.default_rng(0)
    n = 80
    x = pd.DataFrame(
        {
            "size": rng.normal(0, 1, n),
            "color": rng.choice(COLORS, n).astype(object),
            "count": rng.integers(0, 10, n).astype(np.int64),
            "flag": rng.integers(0, 2, n).astype(bool),
            "weight": rng.normal(5, 2, n),
        }
    )
    y = ((x["size"] > 0) ^ (x["color"] == "red")).astype(int)
    prep = ColumnTransformer(
        [("onehot", OneHotEncoder(handle_unknown="ignore"), ["color"])], remainder="passthrough"
    )
    pipe = Pipeline([("prep", prep), ("model", LogisticRegression(max_iter=500))])
    return Hosted("mixed", pipe.fit(x, y), x, {"color": frozenset(COLORS)})


# request forms ----------------------------------------------------------------------------------------------


def matrix_typed(model: str, rows: pd.DataFrame) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=model)
    tensor = request.inputs.add(name="input-0", datatype="FP64", shape=list(rows.shape))
    tensor.contents.fp64_contents.extend(rows.to_numpy(dtype=np.float64).reshape(-1).tolist())
    request.outputs.add(name="predict")
    request.outputs.add(name="predict_proba")
    return request


def matrix_raw(model: str, rows: pd.DataFrame) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=model)
    request.inputs.add(name="input-0", datatype="FP64", shape=list(rows.shape))
    request.raw_input_contents.append(rows.to_numpy(dtype="<f8").tobytes())
    request.outputs.add(name="predict")
    request.outputs.add(name="predict_proba")
    return request


def columns_raw(model: str, rows: pd.DataFrame) -> pb.ModelInferRequest:
    return build_request(model, rows, probabilities=True)


def columns_typed(model: str, rows: pd.DataFrame) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=model)
    for name in rows.columns:
        tensor = request.inputs.add(name=str(name), datatype="FP64", shape=[len(rows)])
        tensor.contents.fp64_contents.extend(rows[name].to_numpy(dtype=np.float64).tolist())
    request.outputs.add(name="predict")
    request.outputs.add(name="predict_proba")
    return request


FORMS: dict[str, Callable[[str, pd.DataFrame], pb.ModelInferRequest]] = {
    "matrix-typed": matrix_typed,
    "matrix-raw": matrix_raw,
    "columns-raw": columns_raw,
    "columns-typed": columns_typed,
}


def _wire(request: pb.ModelInferRequest) -> pb.ModelInferRequest:
    """The request as the server parses it off the wire."""
    return pb.ModelInferRequest.FromString(request.SerializeToString())


# the in-process server --------------------------------------------------------------------------------------


class _Context:
    def invocation_metadata(self) -> tuple[()]:
        return ()

    async def abort(self, code: Any, message: str) -> None:
        raise AssertionError(f"call failed: {code}: {message}")


class _Server:
    serving = True


def serve(hosted: Hosted, requests: list[pb.ModelInferRequest], *, concurrently: bool = False) -> list[Any]:
    """Each request through the real servicer, core, host and batcher; the decoded outputs of each answer."""

    async def main() -> list[Any]:
        host = ModelHost(lambda name, version: hosted.loaded, metrics=ServingMetrics())
        await host.load(hosted.name, "1")
        servicer = InferenceServicer(InferenceCore(host, metrics=ServingMetrics()), _Server())  # type: ignore[arg-type]
        calls = [servicer.ModelInfer(_wire(r), _Context()) for r in requests]  # type: ignore[arg-type]
        if concurrently:
            responses = await asyncio.gather(*calls)
        else:
            responses = [await call for call in calls]
        await host.close()
        return [decode_outputs(r) for r in responses]

    return asyncio.run(main())


def _shuffled(rows: pd.DataFrame, seed: int) -> pd.DataFrame:
    return rows[list(np.random.default_rng(seed).permutation(rows.columns))]


def _assert_exact(hosted: Hosted, outputs: dict[str, np.ndarray], rows: slice) -> None:
    """The answers equal the model's own on the same rows, predicted together as the server did (a linear
    model's last bits depend on how many rows one BLAS call takes)."""
    frame = hosted.rows.iloc[rows]
    assert np.array_equal(outputs["predict"], hosted.own.predict(frame))
    assert np.array_equal(outputs["predict_proba"], hosted.own.predict_proba(frame))  # bit-identical


# answers ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("form", sorted(FORMS))
@pytest.mark.parametrize("model", ["reference", "linear"])
def test_every_form_answers_exactly_the_models_own(form: str, model: str, request: Any) -> None:
    hosted: Hosted = request.getfixturevalue(model)
    make = FORMS[form]
    shuffle = form.startswith("columns")
    cases = []  # (request, rows it carries): one row, then the same structure with other values, then 5 rows
    for i in range(4):
        rows = hosted.rows.iloc[[i]]
        cases.append((make(hosted.name, _shuffled(rows, 1) if shuffle else rows), slice(i, i + 1)))
    for start in (4, 7):
        rows = hosted.rows.iloc[start : start + 5]
        cases.append((make(hosted.name, _shuffled(rows, 2) if shuffle else rows), slice(start, start + 5)))
    outputs = serve(hosted, [r for r, _ in cases])
    for out, (_, rows_) in zip(outputs, cases, strict=True):
        _assert_exact(hosted, out, rows_)
    plans = hosted.schema.decoders["oip"]
    assert plans.raw or plans.typed  # the structure was learned: later requests took the bulk path


def test_concurrent_requests_of_every_form_batch_together(reference: Hosted) -> None:
    requests, slices = [], []
    for i in range(12):
        key = sorted(FORMS)[i % 4]
        rows = reference.rows.iloc[[i]]
        requests.append(FORMS[key](reference.name, _shuffled(rows, i) if key.startswith("columns") else rows))
        slices.append(slice(i, i + 1))
    for out, rows in zip(serve(reference, requests * 3, concurrently=True), slices * 3, strict=True):
        _assert_exact(reference, out, rows)


def test_mixed_model_columns_raw_shuffled_and_multirow(mixed: Hosted) -> None:
    cases = [(mixed.rows.iloc[[i]], slice(i, i + 1)) for i in range(4)]
    cases += [(mixed.rows.iloc[3:9], slice(3, 9)), (_shuffled(mixed.rows.iloc[5:12], 4), slice(5, 12))]
    cases += [(_shuffled(mixed.rows.iloc[[i]], 5), slice(i, i + 1)) for i in range(3)]
    outputs = serve(mixed, [build_request(mixed.name, rows, probabilities=True) for rows, _ in cases])
    for out, (_, rows) in zip(outputs, cases, strict=True):
        _assert_exact(mixed, out, rows)
    assert any(plan is not None for plan in mixed.schema.decoders["oip"].raw.values())


# errors -----------------------------------------------------------------------------------------------------


def _both_paths(schema: ModelSchema, request: pb.ModelInferRequest) -> tuple[str, str]:
    """The error of the detailed path alone and of the server's decoder (plans learned or not)."""
    with pytest.raises(InvalidInputError) as detailed:
        schema.validate(decode_inputs(_wire(request)))
    with pytest.raises(InvalidInputError) as served:
        OipInputs(_wire(request)).features(schema, reject_unseen=True)
    return str(detailed.value), str(served.value)


def _learn(hosted: Hosted, request: pb.ModelInferRequest) -> None:
    for _ in range(2):
        OipInputs(_wire(request)).features(hosted.schema, reject_unseen=True)


def _set_raw(request: pb.ModelInferRequest, name: str, payload: bytes) -> pb.ModelInferRequest:
    out = _wire(request)
    index = [t.name for t in out.inputs].index(name)
    out.raw_input_contents[index] = payload
    return out


def test_a_learned_raw_structure_still_gets_every_error(reference: Hosted) -> None:
    rows = _shuffled(reference.rows.iloc[:2], 7)
    good = columns_raw(reference.name, rows)
    _learn(reference, good)
    first = str(rows.columns[0])
    nan = _set_raw(good, first, struct.pack("<2d", SECRET, np.nan))
    short = _set_raw(good, first, struct.pack("<d", SECRET))
    shifted = _set_raw(
        _set_raw(good, first, struct.pack("<3d", SECRET, SECRET, SECRET)), str(rows.columns[1]), b""
    )
    for bad, message in [
        (nan, f"column '{first}' contains NaN"),
        (short, f"input '{first}': raw contents hold 8 bytes"),
        (shifted, f"input '{first}': raw contents hold 24 bytes"),
    ]:
        detailed, served = _both_paths(reference.schema, bad)
        assert detailed == served and message in served
        assert "987654" not in served


def test_a_learned_typed_structure_still_gets_every_error(reference: Hosted) -> None:
    rows = reference.rows.iloc[:1]
    for make in (columns_typed, matrix_typed):
        good = make(reference.name, rows)
        _learn(reference, good)
        nan = _wire(good)
        nan.inputs[0].contents.fp64_contents[0] = np.nan
        extra = _wire(good)
        extra.inputs[0].contents.int64_contents.append(1)
        more = _wire(good)
        more.inputs[0].contents.fp64_contents.append(SECRET)
        for bad, message in [(nan, "contain"), (extra, "has values in int64_contents"), (more, "element(s)")]:
            detailed, served = _both_paths(reference.schema, bad)
            assert detailed == served and message in served
            assert "987654" not in served


def test_a_learned_mixed_structure_still_gets_every_error(mixed: Hosted) -> None:
    rows = mixed.rows.iloc[:1]
    good = build_request(mixed.name, rows)
    _learn(mixed, good)
    unseen = _set_raw(good, "color", encode_raw(np.array([b"purple-secret"], dtype=object), "BYTES"))
    not_utf8 = _set_raw(good, "color", encode_raw(np.array([b"\xff"], dtype=object), "BYTES"))
    cut = _set_raw(good, "color", struct.pack("<I", 9) + b"red")
    for bad, message in [
        (unseen, "column 'color' has 1 value(s) that are not categories seen"),
        (not_utf8, "column 'color' holds bytes that are not valid UTF-8"),
        (cut, "input 'color': raw BYTES element 0 is longer than the data left"),
    ]:
        detailed, served = _both_paths(mixed.schema, bad)
        assert detailed == served and message in served
        assert "purple" not in served


def test_other_structures_take_the_detailed_path_with_its_answers(reference: Hosted) -> None:
    rows = reference.rows.iloc[:3]
    names = list(rows.columns)
    as_int = build_request(reference.name, rows.round().astype(np.int32), probabilities=True)
    missing = build_request(reference.name, rows[names[1:]])
    unknown = build_request(reference.name, rows.assign(zz=SECRET))
    expected_int = reference.loaded.predict(reference.schema.validate(decode_inputs(_wire(as_int))))[0]
    for _ in range(2):  # valid but no plan (INT32 for FP64 columns): same answers as the detailed path
        got = OipInputs(_wire(as_int)).features(reference.schema, reject_unseen=True)
        assert np.array_equal(reference.loaded.predict(got)[0], expected_int)
        for bad, message in [(missing, "missing required column"), (unknown, "unknown column")]:
            detailed, served = _both_paths(reference.schema, bad)
            assert detailed == served and message in served


def test_malformed_inputs_are_reported_before_an_unknown_model(reference: Hosted) -> None:
    request = _wire(columns_raw("no-such-model", reference.rows.iloc[:1]))
    request.inputs[0].datatype = "FLOAT"

    async def main(req: pb.ModelInferRequest) -> None:
        host = ModelHost(lambda name, version: reference.loaded, metrics=ServingMetrics())
        core = InferenceCore(host, metrics=ServingMetrics())
        await core.infer(req.model_name, OipInputs(req))

    with pytest.raises(InvalidInputError, match="unknown datatype"):
        asyncio.run(main(request))
    with pytest.raises(NotFoundError, match="no-such-model"):
        asyncio.run(main(_wire(columns_raw("no-such-model", reference.rows.iloc[:1]))))


@pytest.mark.parametrize("form", sorted(FORMS))
def test_a_known_structure_skips_the_detailed_path(
    form: str, reference: Hosted, mixed: Hosted, monkeypatch: pytest.MonkeyPatch
) -> None:
    detailed = ModelSchema.validate
    calls: list[int] = []

    def counted(self: ModelSchema, *args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return detailed(self, *args, **kwargs)

    monkeypatch.setattr(ModelSchema, "validate", counted)
    cases = [(reference, FORMS[form](reference.name, reference.rows.iloc[i : i + 3])) for i in range(3)]
    if form == "columns-raw":
        cases += [(mixed, build_request(mixed.name, mixed.rows.iloc[i : i + 3])) for i in range(3)]
    for hosted, request in cases:
        OipInputs(_wire(request)).features(hosted.schema, reject_unseen=True)
    assert len(calls) <= len(cases) // 3  # the first request of each structure at most


def test_a_learned_structure_with_payloads_missing_or_extra(mixed: Hosted, reference: Hosted) -> None:
    for hosted in (mixed, reference):
        good = build_request(hosted.name, hosted.rows.iloc[:2])
        _learn(hosted, good)
        fewer = _wire(good)
        del fewer.raw_input_contents[-1]
        more = _wire(good)
        more.raw_input_contents.append(b"")
        for bad in (fewer, more):
            detailed, served = _both_paths(hosted.schema, bad)
            assert detailed == served and "raw_input_contents" in served


def test_concurrent_mixed_requests_of_several_structures_batch_together(mixed: Hosted) -> None:
    """Bulk-decoded requests (any column order) and detailed-path ones (INT32 counts) share batches."""
    requests, slices = [], []
    for i in range(10):
        rows = mixed.rows.iloc[i : i + 1 + i % 3]
        sent = _shuffled(rows, i % 4)
        if i % 5 == 4:
            sent = sent.astype({"count": np.int32})
        requests.append(build_request(mixed.name, sent, probabilities=True))
        slices.append(slice(i, i + 1 + i % 3))
    for out, rows in zip(serve(mixed, requests * 2, concurrently=True), slices * 2, strict=True):
        frame = mixed.rows.iloc[rows]
        assert np.array_equal(out["predict"], mixed.own.predict(frame))
        # predicted in a batch with other requests: a linear model's last bits depend on the batch's size
        np.testing.assert_allclose(out["predict_proba"], mixed.own.predict_proba(frame), rtol=1e-12, atol=0)


def test_bulk_decoded_columns_concatenate_like_dict_columns(mixed: Hosted) -> None:
    parts = []
    for i, seed in enumerate([0, 1, 2, 2]):  # the same placement whatever the request's column order
        request = _wire(build_request(mixed.name, _shuffled(mixed.rows.iloc[i : i + 2], seed)))
        for _ in range(2):  # the second one is bulk-decoded
            features = OipInputs(request).features(mixed.schema, reject_unseen=True)
        parts.append(features)
    assert all(isinstance(p.columns, ColumnBlocks) for p in parts)
    joined = Features.concat(parts)
    assert isinstance(joined.columns, ColumnBlocks) and joined.n_rows == 8
    as_dicts = Features.concat([Features(p.n_rows, columns=dict(p.columns)) for p in parts])
    assert list(joined.columns) == list(as_dicts.columns) == mixed.schema.names
    for name in mixed.schema.names:
        assert joined.columns[name].dtype == as_dicts.columns[name].dtype
        assert joined.columns[name].tolist() == as_dicts.columns[name].tolist()
    mixed_kinds = Features.concat([parts[0], Features(2, columns=dict(parts[1].columns))])
    assert not isinstance(mixed_kinds.columns, ColumnBlocks) and mixed_kinds.n_rows == 4


def test_tensor_inputs_give_the_same_rows(mixed: Hosted) -> None:
    request = _wire(build_request(mixed.name, _shuffled(mixed.rows.iloc[:3], 1)))
    _learn(mixed, request)
    bulk = OipInputs(request).features(mixed.schema, reject_unseen=True)
    plain = TensorInputs(decode_inputs(request)).features(mixed.schema, reject_unseen=True)
    assert isinstance(bulk.columns, ColumnBlocks) and isinstance(plain.columns, dict)
    for name in mixed.schema.names:
        assert bulk.columns[name].dtype == plain.columns[name].dtype
        assert bulk.columns[name].tolist() == plain.columns[name].tolist()
