"""Feeding all-float rows to a scikit-learn model as a numpy matrix rather than a pandas DataFrame.

Called by `serving.model_host` when a scikit-learn model loads. Building a DataFrame and letting a pipeline
check feature names costs several times the prediction itself on small batches (measured: 7-11 ms against
2.3 ms for the 100-tree reference pipeline). A model fitted on a DataFrame remembers its column names and
warns when given a bare matrix, so this module orders the matrix columns as the model was fitted
(`fitted_order`, which the DataFrame path uses too), drops the remembered names from the first estimator,
and keeps the fast path only when the model then answers a probe exactly as it does with a DataFrame and
without a warning; otherwise it restores the names and the caller stays on the DataFrame path. A bare
decision tree on that path is answered by its fitted tree's traversal (`tree_method`), skipping the input
checks scikit-learn repeats on every call, under the same bit-identical probe.
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from .schema import Features, ModelSchema

log = logging.getLogger(__name__)

_MISSING = object()
#: `warnings.catch_warnings` swaps process-wide state: two probes interleaving (two models loading at once)
#: would restore it in the wrong order and leave warnings recorded into a dead list for good
PROBE_LOCK = threading.Lock()
_PROBE_ROWS = 8


def first_estimator(model: Any) -> Any:
    """The estimator that receives the raw input: the first real step of a (nested) pipeline."""
    steps = getattr(model, "steps", None)
    if not isinstance(steps, list):
        return model
    for step in steps:
        est = step[1] if isinstance(step, tuple) and len(step) >= 2 else None
        if est is None or isinstance(est, str):  # None or "passthrough"
            continue
        return first_estimator(est)
    return None


def fitted_order(model: Any, schema: ModelSchema) -> list[str]:
    """The column order the model was fitted with when it remembers one naming the same columns as the
    signature (a scikit-learn estimator refuses a DataFrame whose columns are in another order), else the
    signature's order."""
    names = schema.names
    fitted = getattr(first_estimator(model), "feature_names_in_", None)
    if fitted is None:
        return names
    fitted_names = [str(n) for n in fitted]
    return fitted_names if sorted(fitted_names) == sorted(names) else names


def same_answers(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> bool:
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.dtype.kind in "fc":
        return bool(np.array_equal(a, b, equal_nan=True))
    return bool(np.array_equal(a, b))


def matrix_feeder(
    model: Any, schema: ModelSchema, method: Callable[[Any], Any], frame: Callable[[Features], Any]
) -> Callable[[Features], Any] | None:
    """A function from validated rows to the model's input matrix, or None when the model needs a frame.

    `frame` is the DataFrame path (columns in `fitted_order`); the matrix path is kept only when `method`
    gives bit-identical answers on a probe and emits no warning. Warnings are recorded, not raised, while
    probing: another thread's warning in that window is swallowed (and only makes this fall back), never
    turned into an error of someone else's request."""
    if not schema.all_float:
        return None
    first = first_estimator(model)
    if first is None or not hasattr(first, "__dict__"):
        return None
    names = schema.names
    order_names = fitted_order(model, schema)
    if sorted(order_names) != sorted(names):
        return None
    index = [names.index(n) for n in order_names]
    order = None if index == list(range(len(names))) else index
    probe = Features(_PROBE_ROWS, matrix=np.random.default_rng(0).normal(size=(_PROBE_ROWS, len(names))))

    def feed(features: Features) -> Any:
        assert features.matrix is not None
        return features.matrix if order is None else features.matrix[:, order]

    with PROBE_LOCK:
        return _probe(first, method, frame, feed, probe)


def _probe(
    first: Any,
    method: Callable[[Any], Any],
    frame: Callable[[Features], Any],
    feed: Callable[[Features], Any],
    probe: Features,
) -> Callable[[Features], Any] | None:
    try:
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            expected = np.asarray(method(frame(probe)))
    except Exception:
        log.debug("model fails the DataFrame probe; no matrix path", exc_info=True)
        return None
    saved = first.__dict__.pop("feature_names_in_", _MISSING)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            got = np.asarray(method(feed(probe)))
        if not caught and same_answers(got, expected):
            return feed
        log.debug("model answers a bare matrix differently or with a warning; DataFrame path kept")
    except Exception:
        log.debug("model rejects a bare matrix; staying on the DataFrame path", exc_info=True)
    if saved is not _MISSING:
        first.__dict__["feature_names_in_"] = saved
    return None


#: The bare trees whose answer is their fitted tree's own traversal, and the method that gives it.
_TREE_METHODS = {"DecisionTreeClassifier": "predict_proba", "DecisionTreeRegressor": "predict"}


def tree_method(model: Any, method: Callable[[Any], Any], n_features: int) -> Callable[[Any], Any] | None:
    """For a bare scikit-learn decision tree fed a matrix: its fitted tree's traversal on float32 rows, which
    is what `method` computes after checking its input (the checks cost ~70 us per call, the traversal ~3 us:
    measured on a depth-6 tree of 30 features). Rows holding a NaN or an infinity go to `method` itself, which
    answers or refuses them as before. Kept only when the method answers a probe matrix without a warning and
    the traversal answers it bit-identically; else None."""
    kind = type(model).__name__
    if (
        not type(model).__module__.startswith("sklearn.tree")
        or _TREE_METHODS.get(kind) != getattr(method, "__name__", "")
        or getattr(model, "n_outputs_", None) != 1
        or getattr(model, "n_features_in_", None) != n_features
    ):
        return None
    tree = model.tree_
    classes = int(model.n_classes_) if kind == "DecisionTreeClassifier" else None

    def traverse(matrix: Any) -> Any:
        if not np.isfinite(matrix).all():
            return method(matrix)
        out = tree.predict(np.ascontiguousarray(matrix, dtype=np.float32))
        return out[:, :classes] if classes is not None else out[:, 0]  # as the method slices it

    probe = np.random.default_rng(0).normal(size=(_PROBE_ROWS, n_features))
    try:
        with PROBE_LOCK, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            expected = np.asarray(method(probe))
        if not caught and same_answers(np.asarray(traverse(probe)), expected):
            return traverse
    except Exception:
        log.debug("tree traversal fails the probe; the tree's own method is kept", exc_info=True)
    return None


__all__ = ["PROBE_LOCK", "first_estimator", "fitted_order", "matrix_feeder", "same_answers", "tree_method"]
