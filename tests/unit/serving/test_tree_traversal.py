"""A bare decision tree on the matrix fast path is answered by its fitted tree's own traversal
(`serving.fast_input.tree_method`): bit-identical to the tree fed a DataFrame, rows with a NaN answered and
rows with an infinity refused by the tree's own method as before, and anything else left to its method."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.ensemble import RandomForestClassifier
from sklearn.pipeline import Pipeline
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

from modelloop.serving.fast_input import tree_method
from modelloop.serving.model_host import sklearn_predictor
from modelloop.serving.schema import Column, Features, ModelSchema


def _schema(names: list[str]) -> ModelSchema:
    return ModelSchema(
        columns=tuple(Column(n, "float", "FP64", "float64", True) for n in names),
        prediction_datatype="FP64",
    )


def _reversed(frame: pd.DataFrame) -> tuple[ModelSchema, Features]:
    """A signature listing the columns in reverse (so the matrix is reordered) and the rows in it."""
    names = list(reversed(frame.columns))
    return _schema(names), Features(len(frame), matrix=frame[names].to_numpy(dtype=np.float64))


def test_a_classifier_tree_is_traversed_with_identical_answers() -> None:
    x, y = load_breast_cancer(return_X_y=True, as_frame=True)
    tree = DecisionTreeClassifier(max_depth=6, random_state=0).fit(x, y)
    rows = x.sample(80, random_state=1)
    rows.iloc[3, 4] = np.nan  # a missing value: the tree's own method answers it
    expected_proba, expected = tree.predict_proba(rows), tree.predict(rows)
    schema, features = _reversed(rows)
    predict = sklearn_predictor(tree, schema)  # the matrix path: the tree forgets its column names
    assert tree_method(tree, tree.predict_proba, len(schema.names)) is not None
    pred, proba = predict(features)
    assert proba is not None and np.array_equal(proba, expected_proba)
    assert np.array_equal(pred, expected)

    rows.iloc[5, 2] = np.inf
    with pytest.raises(ValueError, match="infinity"):
        predict(_reversed(rows)[1])


def test_a_regressor_tree_is_traversed_with_identical_answers() -> None:
    x, y = load_diabetes(return_X_y=True, as_frame=True)
    tree = DecisionTreeRegressor(max_depth=5, random_state=0).fit(x, y)
    rows = x.sample(50, random_state=2)
    expected = tree.predict(rows)
    schema, features = _reversed(rows)
    predict = sklearn_predictor(tree, schema)  # the matrix path: the tree forgets its column names
    assert tree_method(tree, tree.predict, len(schema.names)) is not None
    pred, proba = predict(features)
    assert proba is None and np.array_equal(pred, expected)


def test_other_models_keep_their_own_method() -> None:
    x, y = load_breast_cancer(return_X_y=True)
    tree = DecisionTreeClassifier(max_depth=3, random_state=0).fit(x, y)
    two_outputs = DecisionTreeClassifier(max_depth=3).fit(x, np.column_stack([y, 1 - y]))
    forest = RandomForestClassifier(n_estimators=3, random_state=0).fit(x, y)
    piped = Pipeline([("model", DecisionTreeClassifier(max_depth=3))]).fit(x, y)
    assert tree_method(tree, tree.predict, x.shape[1]) is None  # labels are not the traversal's answer
    assert tree_method(tree, tree.predict_proba, x.shape[1] - 1) is None
    assert tree_method(two_outputs, two_outputs.predict_proba, x.shape[1]) is None
    assert tree_method(forest, forest.predict_proba, x.shape[1]) is None
    assert tree_method(piped, piped.predict_proba, x.shape[1]) is None
