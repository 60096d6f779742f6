"""Validation against the MLflow signature: every error class names the column and the problem and never
echoes the data; valid input becomes the rows the model is fed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from mlflow.models import infer_signature

from modelloop.contract.errors import InvalidInputError
from modelloop.serving.errors import ModelLoadError, OversizedInputError
from modelloop.serving.schema import InputTensor, ModelSchema

SECRET = 987654.125  # a value that must never appear in an error message


def numeric_schema() -> ModelSchema:
    frame = pd.DataFrame({"a": [1.0, 2.0], "b": [3.0, 4.0]})
    return ModelSchema.from_signature(infer_signature(frame, np.array([0, 1])), classes=[0, 1], max_rows=10)


def mixed_schema() -> ModelSchema:
    frame = pd.DataFrame(
        {"color": ["red", "blue"], "n": np.array([1, 2], dtype=np.int64), "ok": [True, False]}
    )
    return ModelSchema.from_signature(
        infer_signature(frame, np.array([0.5, 1.5])), categories={"color": frozenset({"red", "blue"})}
    )


def col(name: str, values: list, datatype: str = "FP64") -> InputTensor:
    arr = np.array(values, dtype=object if datatype == "BYTES" else None)
    return InputTensor(name, datatype, (len(values),), arr)


def test_schema_from_signature() -> None:
    schema = mixed_schema()
    assert [(c.name, c.datatype) for c in schema.columns] == [
        ("color", "BYTES"),
        ("n", "INT64"),
        ("ok", "BOOL"),
    ]
    assert schema.prediction_datatype == "FP64"
    assert numeric_schema().prediction_datatype == "INT64"
    assert numeric_schema().all_float


def test_valid_columns_and_matrix() -> None:
    schema = numeric_schema()
    features = schema.validate([col("b", [3.0, 4.0]), col("a", [1, 2], "INT32")])
    assert features.n_rows == 2
    assert features.matrix is not None
    assert features.matrix.tolist() == [[1.0, 3.0], [2.0, 4.0]]
    matrix = InputTensor("input-0", "FP32", (2, 2), np.array([1, 3, 2, 4], dtype=np.float32))
    assert schema.validate([matrix]).matrix.tolist() == [[1.0, 3.0], [2.0, 4.0]]
    mixed = mixed_schema().validate(
        [col("color", [b"red"], "BYTES"), col("n", [3], "INT8"), col("ok", [True], "BOOL")]
    )
    assert mixed.columns["color"].tolist() == ["red"] and mixed.columns["n"].dtype == np.int64


@pytest.mark.parametrize(
    ("tensors", "message"),
    [
        ([col("a", [SECRET]), col("b", [SECRET]), col("zz", [SECRET])], "unknown column.*zz"),
        ([col("a", [SECRET])], "missing required column.*b"),
        (
            [col("a", [SECRET]), col("b", [True], "BOOL")],
            "column 'b' has datatype BOOL; the model expects FP64",
        ),
        ([col("a", [SECRET]), col("b", ["x"], "BYTES")], "column 'b' has datatype BYTES"),
        ([col("a", [SECRET, 1.0]), col("b", [SECRET])], "column 'b' has 1 rows but column 'a' has 2"),
        (
            [col("a", [SECRET]), InputTensor("b", "FP64", (1, 2), np.array([1.0, 2.0]))],
            "column 'b' has shape",
        ),
        ([col("a", [np.nan]), col("b", [SECRET])], "column 'a' contains NaN"),
        ([col("a", []), col("b", [])], "request has no rows"),
        (
            [InputTensor("m", "FP64", (1, 3), np.array([SECRET] * 3))],
            "input 'm' has 3 columns; the model takes 2",
        ),
        ([InputTensor("m", "FP64", (1, 2), np.array([SECRET, np.nan]))], r"column\(s\) b contain NaN"),
        ([InputTensor("m", "BYTES", (1, 2), np.array([b"1", b"2"], dtype=object))], "datatype BYTES"),
        ([], "request has no inputs"),
    ],
)
def test_bad_input_names_the_problem_without_the_data(tensors: list[InputTensor], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message) as info:
        numeric_schema().validate(tensors)
    assert str(SECRET) not in str(info.value) and "987654" not in str(info.value)


def test_too_many_rows_is_oversized() -> None:
    with pytest.raises(OversizedInputError, match="11 rows; at most 10"):
        numeric_schema().validate([col("a", [1.0] * 11), col("b", [1.0] * 11)])


def test_unseen_categories_reject_or_pass() -> None:
    schema = mixed_schema()
    tensors = [col("color", [b"purple-secret"], "BYTES"), col("n", [1], "INT64"), col("ok", [True], "BOOL")]
    with pytest.raises(InvalidInputError, match=r"column 'color' has 1 value.*not categories seen") as info:
        schema.validate(tensors)
    assert "purple" not in str(info.value)
    assert schema.validate(tensors, reject_unseen=False).columns["color"].tolist() == ["purple-secret"]
    with pytest.raises(InvalidInputError, match="column 'color' holds bytes that are not valid UTF-8"):
        schema.validate([col("color", [b"\xff"], "BYTES"), col("n", [1], "INT64"), col("ok", [True], "BOOL")])
    with pytest.raises(InvalidInputError, match="column 'n' has datatype FP64; the model expects INT64"):
        schema.validate([col("color", [b"red"], "BYTES"), col("n", [1.5]), col("ok", [True], "BOOL")])


def test_a_model_without_signature_cannot_load() -> None:
    with pytest.raises(ModelLoadError, match="no signature"):
        ModelSchema.from_signature(None)


def test_one_2d_tensor_for_a_model_with_integer_and_float_columns() -> None:
    frame = pd.DataFrame({"n": np.array([1, 2], dtype=np.int64), "x": [0.5, 1.5], "k": np.array([3, 4])})
    schema = ModelSchema.from_signature(infer_signature(frame, np.array([0, 1])))
    assert not schema.all_float
    tensor = InputTensor("input-0", "INT32", (2, 3), np.array([7, 8, 9, 10, 11, 12], dtype=np.int32))
    features = schema.validate([tensor])
    assert features.matrix is None and features.n_rows == 2
    assert features.columns["n"].tolist() == [7, 10] and features.columns["n"].dtype == np.int64
    assert features.columns["x"].tolist() == [8.0, 11.0] and features.columns["x"].dtype == np.float64
    assert features.columns["k"].tolist() == [9, 12]
    floats = InputTensor("input-0", "FP64", (1, 3), np.array([SECRET, SECRET, SECRET]))
    with pytest.raises(InvalidInputError, match="has datatype FP64; column 'n' expects INT64") as info:
        schema.validate([floats])
    assert "987654" not in str(info.value)
    too_big = InputTensor("input-0", "UINT64", (1, 3), np.array([2**63, 1, 1], dtype=np.uint64))
    with pytest.raises(InvalidInputError, match="column 'n' has values out of range for INT64"):
        schema.validate([too_big])
    with pytest.raises(InvalidInputError, match="only accepted when every column is numeric"):
        mixed_schema().validate([InputTensor("input-0", "INT64", (1, 3), np.array([1, 2, 3]))])
