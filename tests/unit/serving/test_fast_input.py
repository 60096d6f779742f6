"""The numeric-matrix fast path (`serving.fast_input`) answers exactly what the fitted model answers on a
DataFrame, whatever the column order, and falls back to the DataFrame path when a model needs one."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from modelloop.serving.fast_input import first_estimator, matrix_feeder
from modelloop.serving.model_host import _frame, sklearn_predictor
from modelloop.serving.schema import Column, Features, InputTensor, ModelSchema


def _schema(names: list[str], classes: list[Any] | None = None) -> ModelSchema:
    return ModelSchema(
        columns=tuple(Column(n, "float", "FP64", "float64", True) for n in names),
        prediction_datatype="INT64",
        classes=None if classes is None else tuple(classes),
    )


def _features(schema: ModelSchema, frame: pd.DataFrame) -> Features:
    """Rows as the server gets them: one tensor per column, in the request's (here: reversed) order."""
    tensors = [
        InputTensor(c, "FP64", (len(frame),), frame[c].to_numpy(dtype=np.float64))
        for c in reversed(frame.columns)
    ]
    return schema.validate(tensors)


def _breast_cancer() -> tuple[pd.DataFrame, pd.Series]:
    data = load_breast_cancer(as_frame=True)
    x = data.data
    x.columns = [c.replace(" ", "_") for c in x.columns]
    return x, data.target


def test_reference_pipeline_takes_the_matrix_path_with_identical_answers() -> None:
    x, y = _breast_cancer()
    pipe = Pipeline([("scale", StandardScaler()), ("model", HistGradientBoostingClassifier(max_iter=10))])
    pipe.fit(x, y)
    rows = x.sample(60, random_state=1)
    expected_proba = pipe.predict_proba(rows)
    expected_pred = pipe.predict(rows)
    schema = _schema(list(x.columns), list(pipe.classes_))
    predict = sklearn_predictor(pipe, schema)
    assert not hasattr(pipe.steps[0][1], "feature_names_in_")  # the fast path was taken
    pred, proba = predict(_features(schema, rows))
    assert proba is not None
    assert np.array_equal(proba, expected_proba)  # bit-identical, not merely close
    assert np.array_equal(pred, expected_pred)


@pytest.mark.parametrize("fast", [True, False])
def test_columns_fitted_in_another_order_than_the_signature(fast: bool) -> None:
    rng = np.random.default_rng(0)
    fit_order = ["c", "a", "b"]
    x = pd.DataFrame(rng.normal(size=(200, 3)), columns=fit_order)
    y = (x["a"] - 2 * x["c"] + 0.1 * x["b"] > 0).astype(int)  # every column matters, differently
    pipe = Pipeline([("scale", StandardScaler()), ("model", LogisticRegression())]).fit(x, y)
    rows = x.head(25)
    expected = pipe.predict_proba(rows)
    schema = _schema(["a", "b", "c"], [0, 1])  # signature order differs from the fit
    features = _features(schema, rows)
    assert (
        features.matrix is not None and features.matrix[0].tolist() == rows.iloc[0][["a", "b", "c"]].tolist()
    )
    frame = _frame(schema, features, fit_order)
    assert list(frame.columns) == fit_order
    if fast:
        feed = matrix_feeder(pipe, schema, pipe.predict_proba, lambda f: _frame(schema, f, fit_order))
        assert feed is not None
        got = pipe.predict_proba(feed(features))
    else:
        got = pipe.predict_proba(frame)
    assert np.array_equal(got, expected)
    _, proba = sklearn_predictor(
        Pipeline([("scale", StandardScaler()), ("model", LogisticRegression())]).fit(x, y), schema
    )(features)
    assert np.array_equal(proba, expected)


def test_a_model_that_selects_columns_by_name_stays_on_the_dataframe_path() -> None:
    rng = np.random.default_rng(1)
    x = pd.DataFrame(rng.normal(size=(100, 3)), columns=["a", "b", "c"])
    y = (x["b"] > 0).astype(int)
    prep = ColumnTransformer([("scale", StandardScaler(), ["b", "c"])], remainder="drop")
    pipe = Pipeline([("prep", prep), ("model", LogisticRegression())]).fit(x, y)
    schema = _schema(["a", "b", "c"], [0, 1])
    assert matrix_feeder(pipe, schema, pipe.predict_proba, lambda f: _frame(schema, f)) is None
    assert list(prep.feature_names_in_) == ["a", "b", "c"]  # restored after the probe
    _, proba = sklearn_predictor(pipe, schema)(_features(schema, x.head(10)))
    assert np.array_equal(proba, pipe.predict_proba(x.head(10)))


def test_passthrough_steps_and_models_fitted_without_names() -> None:
    rng = np.random.default_rng(2)
    x = pd.DataFrame(rng.normal(size=(80, 2)), columns=["a", "b"])
    y = x["a"] * 3 - x["b"]
    pipe = Pipeline([("nothing", "passthrough"), ("scale", StandardScaler()), ("model", LinearRegression())])
    pipe.fit(x, y)
    assert first_estimator(pipe) is pipe.steps[1][1]
    schema = _schema(["a", "b"])
    expected = pipe.predict(x.head(7))  # before: the fast path drops the names the scaler remembers
    pred, proba = sklearn_predictor(pipe, schema)(_features(schema, x.head(7)))
    assert proba is None and np.array_equal(pred, expected)
    assert not hasattr(pipe.steps[1][1], "feature_names_in_")  # the fast path was taken

    bare = LinearRegression().fit(x.to_numpy(), y)  # fitted on numpy: no names to check
    pred, _ = sklearn_predictor(bare, schema)(_features(schema, x.head(7)))
    # same memory layout as the server's matrix: BLAS may round differently on a Fortran-ordered copy
    assert np.array_equal(pred, bare.predict(np.ascontiguousarray(x.head(7).to_numpy())))


def test_a_model_with_several_outputs_per_row_is_refused() -> None:
    rng = np.random.default_rng(3)
    x = pd.DataFrame(rng.normal(size=(30, 2)), columns=["a", "b"])
    model = LinearRegression().fit(x, np.column_stack([x["a"], x["b"]]))
    schema = _schema(["a", "b"])
    with pytest.raises(ValueError, match="2 outputs per row"):
        sklearn_predictor(model, schema)(_features(schema, x.head(3)))
