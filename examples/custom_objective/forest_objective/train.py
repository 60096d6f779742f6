"""Your own training code: `fit(trial, data)` suggests its parameters, fits, and returns a fitted model.

modelloop calls it once per trial (recording each as a nested MLflow run with its validation score), then
once more with the best parameters fixed (`data.final` is true; the training rows then include the
validation rows) for the model it gates, profiles and registers. The test rows are never given here.
"""

from __future__ import annotations

from typing import Any

from sklearn.ensemble import ExtraTreesClassifier
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline


def fit(trial: Any, data: Any) -> Pipeline:
    """Extremely randomised trees after median imputation."""
    model = Pipeline(
        [
            ("impute", SimpleImputer(strategy="median")),
            (
                "trees",
                ExtraTreesClassifier(
                    n_estimators=trial.suggest_int("n_estimators", 20, 150),
                    max_depth=trial.suggest_int("max_depth", 2, 12),
                    max_features=trial.suggest_float("max_features", 0.2, 1.0),
                    random_state=data.seed,
                    n_jobs=1,
                ),
            ),
        ]
    )
    return model.fit(data.x_train, data.y_train)
