"""Estimators and training code named by import path: `estimator.class: lightgbm.LGBMClassifier` and
`estimator.objective: mypackage.module:function`.

The config validates them here (`check_class`, `check_objective`): the name imports (folders listed in
`estimator.code_paths` first go on the import path, the way MLflow's `code_paths` puts a model's code on it
when the model loads), a class follows scikit-learn's estimator API (`fit`, `predict`, `get_params`,
`set_params`), its fixed and searched parameters exist (unless its constructor takes any keyword) and it
accepts the fixed ones, and its task comes from scikit-learn's `is_classifier` / `is_regressor` unless the
config states it. `build_class_model` makes one unfitted model: the class inside the same preprocessing
pipeline as the built-in tree families (categories one-hot encoded, numbers passed through) or, with
`preprocess: none`, the bare estimator, which is then logged with its own MLflow flavour.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from sklearn.base import is_classifier, is_regressor
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from modelloop.training.estimators import categorical_columns

Task = Literal["classification", "regression"]
#: The packages whose estimators have an MLflow flavour of their own; the hint names modelloop's extra.
_EXTRAS = {"lightgbm": "modelloop[lightgbm]", "xgboost": "modelloop[xgboost]", "catboost": "catboost"}
_API = ("fit", "predict", "get_params", "set_params")


class ImportPathError(ValueError):
    """An import path that does not name what it must; the message is the config's one-line error."""


def add_code_paths(paths: Iterable[Path]) -> None:
    """Put each code path's folder on the import path (once), as MLflow does with a model's `code_paths`:
    a package folder `pkg/` or a module `mod.py` becomes importable as `pkg` / `mod`."""
    for path in paths:
        folder = str(Path(path).resolve().parent)
        if folder not in sys.path:
            sys.path.insert(0, folder)


def _import_module(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        top = name.split(".", 1)[0]
        missing = getattr(exc, "name", None) or top
        hint = f" (install {_EXTRAS[top]})" if top in _EXTRAS and missing.split(".")[0] == top else ""
        raise ImportPathError(f"cannot import {missing}{hint}") from None
    except Exception as exc:  # the user's module failing at import
        raise ImportPathError(f"importing {name} fails with {type(exc).__name__}") from None


@functools.cache
def import_class(path: str) -> type[Any]:
    """The class `package.module.Class` names."""
    module, _, name = path.rpartition(".")
    if not module or not name:
        raise ImportPathError(f"{path!r} is not an import path like package.module.Class")
    found = getattr(_import_module(module), name, None)
    if not isinstance(found, type):
        raise ImportPathError(f"{module} has no class {name}")
    missing = [m for m in _API if not callable(getattr(found, m, None))]
    if missing:
        raise ImportPathError(
            f"{path} does not follow scikit-learn's estimator API (no {', '.join(missing)})"
        )
    return found


def import_function(path: str) -> Callable[..., Any]:
    """The function `package.module:function` names."""
    module, sep, name = path.partition(":")
    if not sep or not module or not name.isidentifier():
        raise ImportPathError(f"{path!r} is not like package.module:function")
    found = getattr(_import_module(module), name, None)
    if not callable(found):
        raise ImportPathError(f"{module} has no function {name}")
    return found  # type: ignore[no-any-return]


def class_task(path: str) -> Task | None:
    """classification or regression as scikit-learn tells from the class, None when it cannot tell."""
    try:
        instance = import_class(path)()
    except Exception:
        return None
    if is_classifier(instance):
        return "classification"
    if is_regressor(instance):
        return "regression"
    return None


def _takes_any_keyword(cls: type[Any]) -> bool:
    try:
        params = inspect.signature(cls.__init__).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def check_class(
    path: str, params: Mapping[str, Any], space: Mapping[str, Any] | None
) -> tuple[str, str] | None:
    """(field, problem) when the class's fixed params or search space name parameters it does not take, or
    it refuses the fixed ones."""
    cls = import_class(path)
    try:
        known = set(cls().get_params())
    except Exception as exc:
        return "class", f"{path}() cannot be made without arguments ({type(exc).__name__})"
    if not _takes_any_keyword(cls):
        for field, names in (("params", params), ("search_space", space or {})):
            for key in names:
                if key not in known:
                    return f"{field}.{key}", f"{cls.__name__} has no parameter {key!r}"
    for key in space or {}:
        if key in params:
            return f"search_space.{key}", "is both fixed in params and searched"
    try:
        est = cls(**params)
        if hasattr(est, "_parameter_constraints"):  # scikit-learn's own estimators check them before fit
            est._validate_params()
    except (TypeError, ValueError) as exc:
        return "params", str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
    except Exception as exc:  # the class's own code failing
        return "params", f"{cls.__name__}(**params) fails with {type(exc).__name__}"
    return None


def build_class_model(
    path: str, params: Mapping[str, Any], *, preprocess: str, columns: pd.DataFrame, seed: int
) -> Any:
    """An unfitted model of the class: in the preprocessing pipeline, or bare with `preprocess: none`."""
    est = import_class(path)(**params)
    if "random_state" in est.get_params() and "random_state" not in params:
        est.set_params(random_state=seed)
    if preprocess == "none":
        return est
    cats = categorical_columns(columns)
    if not cats:
        return Pipeline([("model", est)])
    nums = [str(c) for c in columns.columns if str(c) not in cats]
    onehot = OneHotEncoder(handle_unknown="ignore")
    prep = ColumnTransformer([("numeric", "passthrough", nums), ("categorical", onehot, cats)])
    return Pipeline([("prepare", prep), ("model", est)])


__all__ = [
    "ImportPathError",
    "add_code_paths",
    "build_class_model",
    "check_class",
    "class_task",
    "import_class",
    "import_function",
]
