"""Estimator families: the reviewed skops trusted types are exactly what each fitted pipeline needs, and
pipelines handle missing values and categories."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from sklearn.datasets import load_breast_cancer, load_diabetes

from modelloop.training.estimators import FAMILIES, build_pipeline, search_space, trusted_types


def table(task: str, *, categorical: bool) -> tuple[pd.DataFrame, pd.Series]:
    x, y = (load_breast_cancer if task == "classification" else load_diabetes)(return_X_y=True, as_frame=True)
    x = x.iloc[:150, :5].copy()
    y = y.iloc[:150]
    x.iloc[::7, 0] = np.nan
    if categorical:
        x["shade"] = np.where(
            np.arange(len(x)) % 3 == 0, None, np.where(np.arange(len(x)) % 2, "light", "dark")
        )
    return x, y


@pytest.mark.parametrize("categorical", [False, True], ids=["numeric", "with-categories"])
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_trusted_types_are_exactly_what_the_model_needs(family: str, categorical: bool) -> None:
    x, y = table(FAMILIES[family].task, categorical=categorical)
    params = {"n_estimators": 3} if "forest" in family else {"max_iter": 5} if "gradient" in family else {}
    model = build_pipeline(family, params, columns=x, seed=0).fit(x, y)
    blob = sio.dumps(model)
    assert sorted(sio.get_untrusted_types(data=blob)) == sorted(trusted_types(family))
    loaded = sio.loads(blob, trusted=trusted_types(family))
    assert np.array_equal(loaded.predict(x), model.predict(x))


def test_default_space_leaves_out_fixed_params() -> None:
    space = search_space("random_forest_classifier", None, fixed={"n_estimators": 5})
    assert "n_estimators" not in space and "max_depth" in space
