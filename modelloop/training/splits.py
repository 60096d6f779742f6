"""Train / validation / test splits: random, stratified, and time-ordered (out-of-time test).

`split(prepared, config, seed)` is called once per training. Trials fit on `train` and are scored on
`validation`; the best parameters are refit on `train + validation` (`fit_x`, `fit_y`) and the model and the
baseline are both scored on `test`, the same rows the gate and the reference profile use.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from modelloop.contract.errors import InvalidInputError
from modelloop.training.config import SplitConfig
from modelloop.training.datasets import Prepared


@dataclass(frozen=True)
class Split:
    x_train: pd.DataFrame
    y_train: pd.Series
    x_val: pd.DataFrame
    y_val: pd.Series
    x_test: pd.DataFrame
    y_test: pd.Series

    @property
    def fit_x(self) -> pd.DataFrame:
        return pd.concat([self.x_train, self.x_val])

    @property
    def fit_y(self) -> pd.Series:
        return pd.concat([self.y_train, self.y_val])


def _two_way(
    idx: np.ndarray, y: pd.Series, size: float, *, kind: str, seed: int, what: str
) -> tuple[np.ndarray, np.ndarray]:
    if kind == "time":
        n_out = int(np.ceil(len(idx) * size))
        return idx[: len(idx) - n_out], idx[len(idx) - n_out :]
    stratify = y.iloc[idx] if kind == "stratified" else None
    try:
        first, second = train_test_split(idx, test_size=size, random_state=seed, stratify=stratify)
    except ValueError:
        if kind == "stratified":
            smallest = int(y.iloc[idx].value_counts().min())
            raise InvalidInputError(
                f"a stratified {what} split needs at least 2 rows of every class; the rarest class has "
                f"{smallest} (of {len(idx)} rows)"
            ) from None
        raise InvalidInputError(f"{len(idx)} rows are too few for the {what} split") from None
    return np.asarray(first), np.asarray(second)


def split(prepared: Prepared, config: SplitConfig, *, seed: int) -> Split:
    """Split rows into train, validation and test as the config says."""
    n = len(prepared.x)
    idx = np.arange(n)
    if config.kind == "time":
        assert prepared.time is not None
        order = prepared.time
        if not pd.api.types.is_numeric_dtype(order) and not pd.api.types.is_datetime64_any_dtype(order):
            try:
                order = pd.to_datetime(order)
            except (ValueError, TypeError):
                raise InvalidInputError(
                    f"the time column {config.time_column!r} holds neither numbers nor dates"
                ) from None
        if order.isna().any():
            raise InvalidInputError(f"the time column {config.time_column!r} has missing values")
        idx = np.asarray(order.sort_values(kind="stable").index)
    rest, test = _two_way(idx, prepared.y, config.test_size, kind=config.kind, seed=seed, what="test")
    train, val = _two_way(
        rest, prepared.y, config.validation_size, kind=config.kind, seed=seed, what="validation"
    )
    if min(len(train), len(val), len(test)) == 0:
        raise InvalidInputError(
            f"{n} rows are too few for test_size {config.test_size} "
            f"and validation_size {config.validation_size}"
        )
    x, y = prepared.x, prepared.y
    return Split(
        x_train=x.iloc[train],
        y_train=y.iloc[train],
        x_val=x.iloc[val],
        y_val=y.iloc[val],
        x_test=x.iloc[test],
        y_test=y.iloc[test],
    )


__all__ = ["Split", "split"]
