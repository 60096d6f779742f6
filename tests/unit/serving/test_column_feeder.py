"""The compiled ColumnTransformer path (`serving.column_feeder`) answers bit-identically to the fitted
pipeline fed a DataFrame, and leaves the model on the DataFrame path when it cannot promise that."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, MinMaxScaler, OneHotEncoder, StandardScaler

from modelloop.serving.column_feeder import column_feeder
from modelloop.serving.model_host import _frame, sklearn_predictor
from modelloop.serving.schema import Column, Features, ModelSchema

BANDS = ("large", "medium", "small")


def _data() -> tuple[pd.DataFrame, pd.Series]:
    data = load_breast_cancer(as_frame=True)
    x = data.data.iloc[:, :8].copy()
    x.columns = [c.replace(" ", "_") for c in x.columns]
    radius = x["mean_radius"]
    x["band"] = np.where(radius < 12.0, "small", np.where(radius < 15.0, "medium", "large")).astype(object)
    x["texture_bin"] = (x["mean_texture"] // 5).astype(np.int64)
    return x, data.target


def _schema(x: pd.DataFrame, classes: list[Any] | None) -> ModelSchema:
    columns = []
    for name in x.columns:
        if not pd.api.types.is_numeric_dtype(x[name]):
            columns.append(Column(name, "string", "BYTES", "object", True))
        elif x[name].dtype.kind == "i":
            columns.append(Column(name, "int", "INT64", "int64", True))
        else:
            columns.append(Column(name, "float", "FP64", "float64", True))
    return ModelSchema(
        columns=tuple(columns),
        prediction_datatype="INT64" if classes else "FP64",
        classes=None if classes is None else tuple(classes),
        categories={"band": frozenset(BANDS)},
    )


def _features(x: pd.DataFrame) -> Features:
    """Rows as the validator leaves them: numpy columns, strings as object arrays."""
    return Features(
        len(x),
        columns={
            c: x[c].to_numpy(dtype=object if not pd.api.types.is_numeric_dtype(x[c]) else None)
            for c in x.columns
        },
    )


def _numeric(x: pd.DataFrame) -> list[str]:
    return [c for c in x.columns if c != "band"]


@pytest.mark.parametrize(
    ("numeric_step", "band_step"),
    [
        (StandardScaler(), OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
        (StandardScaler(with_mean=False), OneHotEncoder(handle_unknown="error", sparse_output=False)),
        # transformers with no numpy form here: run through their own `transform` on arrays
        (
            MinMaxScaler(),
            Pipeline(
                [
                    ("impute", SimpleImputer(strategy="most_frequent")),
                    ("encode", OneHotEncoder(sparse_output=False, handle_unknown="ignore")),
                ]
            ),
        ),
    ],
)
def test_compiled_pipeline_answers_exactly_as_with_a_dataframe(numeric_step: Any, band_step: Any) -> None:
    x, y = _data()
    prep = ColumnTransformer([("num", numeric_step, _numeric(x)), ("cat", band_step, ["band"])])
    pipe = Pipeline([("prep", prep), ("model", HistGradientBoostingClassifier(max_iter=15, random_state=0))])
    pipe.fit(x, y)
    rows = x.sample(90, random_state=3)
    expected, expected_pred = pipe.predict_proba(rows), pipe.predict(rows)
    schema = _schema(x, list(pipe.classes_))

    run = column_feeder(pipe, schema, pipe.predict_proba, lambda f: _frame(schema, f))

    assert run is not None
    assert np.array_equal(run(_features(rows)), expected)  # bit-identical, not merely close
    pred, proba = sklearn_predictor(pipe, schema)(_features(rows))
    assert proba is not None and np.array_equal(proba, expected)
    assert np.array_equal(pred, expected_pred)


def test_remainder_passthrough_and_a_regressor() -> None:
    x, _ = _data()
    target = x["mean_area"] * 0.01
    prep = ColumnTransformer([("cat", OneHotEncoder(sparse_output=False), ["band"])], remainder="passthrough")
    pipe = Pipeline([("prep", prep), ("model", Ridge())])
    pipe.fit(x, target)
    rows = x.sample(40, random_state=5)
    schema = _schema(x, None)

    run = column_feeder(pipe, schema, pipe.predict, lambda f: _frame(schema, f))

    assert run is not None
    assert np.array_equal(run(_features(rows)), pipe.predict(rows))


def test_unknown_category_ignored_as_the_encoder_does() -> None:
    x, y = _data()
    prep = ColumnTransformer(
        [
            ("num", StandardScaler(), _numeric(x)),
            ("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False), ["band"]),
        ]
    )
    pipe = Pipeline([("prep", prep), ("model", LogisticRegression(max_iter=2000))])
    pipe.fit(x, y)
    rows = x.head(5).copy()
    rows["band"] = np.array(["huge", "small", "", "medium", "zzz"], dtype=object)
    schema = _schema(x, list(pipe.classes_))
    run = column_feeder(pipe, schema, pipe.predict_proba, lambda f: _frame(schema, f))

    assert run is not None
    assert np.array_equal(run(_features(rows)), pipe.predict_proba(rows))


def test_unknown_category_refused_when_the_encoder_refuses() -> None:
    x, y = _data()
    prep = ColumnTransformer([("cat", OneHotEncoder(sparse_output=False), ["band"])], remainder="drop")
    pipe = Pipeline([("prep", prep), ("model", LogisticRegression())])
    pipe.fit(x, y)
    schema = _schema(x, list(pipe.classes_))
    run = column_feeder(pipe, schema, pipe.predict_proba, lambda f: _frame(schema, f))
    rows = x.head(2).copy()
    rows["band"] = np.array(["small", "secret-value"], dtype=object)

    assert run is not None
    with pytest.raises(ValueError, match="unknown categories") as caught:
        run(_features(rows))
    assert "secret-value" not in str(caught.value)


def test_a_transformer_that_needs_a_dataframe_keeps_the_dataframe_path() -> None:
    x, y = _data()

    def by_name(frame: pd.DataFrame) -> pd.DataFrame:
        return frame[["mean_radius"]] * 2.0  # column access by name: a numpy array would fail

    prep = ColumnTransformer(
        [
            ("num", FunctionTransformer(by_name), ["mean_radius", "mean_texture"]),
            ("cat", OneHotEncoder(sparse_output=False), ["band"]),
        ]
    )
    pipe = Pipeline([("prep", prep), ("model", LogisticRegression())])
    pipe.fit(x, y)
    schema = _schema(x, list(pipe.classes_))

    assert column_feeder(pipe, schema, pipe.predict_proba, lambda f: _frame(schema, f)) is None
    pred, _ = sklearn_predictor(pipe, schema)(_features(x.head(7)))
    assert np.array_equal(pred, pipe.predict(x.head(7)))  # still answered, by the DataFrame path


def test_sparse_output_and_unknown_categories_of_the_schema_are_not_compiled() -> None:
    x, y = _data()
    sparse = ColumnTransformer(
        [("num", StandardScaler(), _numeric(x)), ("cat", OneHotEncoder(), ["band"])], sparse_threshold=1.0
    )
    pipe = Pipeline([("prep", sparse), ("model", LogisticRegression(max_iter=2000))])
    pipe.fit(x, y)
    schema = _schema(x, list(pipe.classes_))
    assert column_feeder(pipe, schema, pipe.predict_proba, lambda f: _frame(schema, f)) is None

    dense = ColumnTransformer(
        [("num", StandardScaler(), _numeric(x)), ("cat", OneHotEncoder(sparse_output=False), ["band"])]
    )
    pipe = Pipeline([("prep", dense), ("model", LogisticRegression(max_iter=2000))]).fit(x, y)
    no_categories = ModelSchema(
        columns=schema.columns, prediction_datatype="INT64", classes=schema.classes, categories={}
    )
    assert column_feeder(pipe, no_categories, pipe.predict_proba, lambda f: _frame(schema, f)) is None


def test_sparse_encoder_with_a_passthrough_remainder_of_int_float_and_bool_columns() -> None:
    rng = np.random.default_rng(0)
    x = pd.DataFrame(
        {
            "color": rng.choice(["blue", "green", "red"], 80).astype(object),
            "count": rng.integers(0, 10, 80).astype(np.int64),
            "size": rng.normal(0, 1, 80),
            "flag": rng.integers(0, 2, 80).astype(bool),
        }
    )
    y = ((x["size"] > 0) ^ (x["color"] == "red")).astype(int)
    prep = ColumnTransformer(
        [("onehot", OneHotEncoder(handle_unknown="ignore"), ["color"])], remainder="passthrough"
    )
    pipe = Pipeline([("prep", prep), ("model", LogisticRegression())]).fit(x, y)
    schema = ModelSchema(
        columns=(
            Column("color", "string", "BYTES", "object", True),
            Column("count", "int", "INT64", "int64", True),
            Column("size", "float", "FP64", "float64", True),
            Column("flag", "bool", "BOOL", "bool", True),
        ),
        prediction_datatype="INT64",
        classes=tuple(pipe.classes_),
        categories={"color": frozenset({"blue", "green", "red"})},
    )
    assert not prep.sparse_output_
    run = column_feeder(pipe, schema, pipe.predict_proba, lambda f: _frame(schema, f))

    assert run is not None
    assert np.array_equal(run(_features(x)), pipe.predict_proba(x))
