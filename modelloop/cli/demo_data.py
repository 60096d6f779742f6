"""The demo's data: scikit-learn's breast-cancer dataset, a training table, a pool of live traffic, and the
documented shift the demo applies midway. Used by `modelloop demo` and its integration test.

The shift (reproducible: no randomness in it): a new imaging device reports every size measurement 30% larger.
The nine size features (`*radius*`, `*perimeter*`, `*area*` of the mean, error and worst groups) are
multiplied by `SHIFT_FACTOR`; the labels do not change. A model trained before the shift mistakes large
benign cells for malignant ones, so its accuracy on live traffic falls, and its drift statistics flag those
nine features.

The training table is a CSV in the data directory that the training config names. The demo's "business side"
keeps it current: each labelled live row is added once (atomically rewritten), so a retraining reads data that
includes the shifted distribution.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

TARGET = "target"
SHIFT_FACTOR = 1.3
SIZE_MARKERS = ("radius", "perimeter", "area")
TRAFFIC_SHARE = 0.3
SEED = 7


def load_dataset() -> pd.DataFrame:
    """Breast cancer (569 rows, 30 numeric features, binary target) with snake_case column names."""
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame
    frame.columns = [str(c).replace(" ", "_") for c in frame.columns]
    return frame


def shifted_features(columns: list[str]) -> list[str]:
    """The features the shift changes: every size measurement."""
    return [c for c in columns if c != TARGET and any(m in c for m in SIZE_MARKERS)]


def apply_shift(rows: pd.DataFrame) -> pd.DataFrame:
    """A copy of `rows` as the new imaging device reports them."""
    out = rows.copy()
    cols = shifted_features(list(out.columns))
    out[cols] = out[cols] * SHIFT_FACTOR
    return out


@dataclass(frozen=True)
class DemoData:
    """The split of the dataset into what training starts from and what arrives as live traffic."""

    training: pd.DataFrame
    pool: pd.DataFrame

    @property
    def features(self) -> list[str]:
        return [c for c in self.training.columns if c != TARGET]

    @classmethod
    def build(cls, *, seed: int = SEED) -> DemoData:
        from sklearn.model_selection import train_test_split

        frame = load_dataset()
        training, pool = train_test_split(
            frame, test_size=TRAFFIC_SHARE, stratify=frame[TARGET], random_state=seed
        )
        return cls(training.reset_index(drop=True), pool.reset_index(drop=True))


@dataclass(frozen=True)
class TrafficRow:
    """One live instance: its features, its (later known) label, and where it came from."""

    key: tuple[int, bool]  # (pool index, shifted)
    features: dict[str, float]
    label: int


def traffic(data: DemoData, shifted: threading.Event, *, seed: int = SEED) -> Iterator[TrafficRow]:
    """Endless live traffic: the pool in a fresh random order each pass, shifted once `shifted` is set.

    Each window of about one pass is a sample without replacement from the pool, so the drift tests see an
    honest sample, not a few rows repeated.
    """
    rng = np.random.default_rng(seed)
    plain = data.pool
    moved = apply_shift(data.pool)
    features = data.features
    while True:
        for index in rng.permutation(len(plain)):
            is_shifted = shifted.is_set()
            row = (moved if is_shifted else plain).iloc[int(index)]
            yield TrafficRow(
                key=(int(index), is_shifted),
                features={f: float(row[f]) for f in features},
                label=int(row[TARGET]),
            )


class TrainingTable:
    """The CSV the training config reads: the initial training rows plus each labelled live row, once.

    `add` is thread safe; the file is rewritten atomically (temp file + rename), so a training process that
    reads it concurrently sees either the old or the new table, never half of one.
    """

    def __init__(self, path: Path, initial: pd.DataFrame) -> None:
        self.path = path
        self._columns = list(initial.columns)
        self._rows: list[dict[str, float]] = []
        self._seen: set[tuple[int, bool]] = set()
        self._initial = initial
        self._lock = threading.Lock()
        self._dirty = False
        self._write(initial)

    def add(self, row: TrafficRow) -> None:
        with self._lock:
            if row.key in self._seen:
                return
            self._seen.add(row.key)
            self._rows.append({**row.features, TARGET: row.label})
            self._dirty = True

    def flush(self) -> int:
        """Write the table if it changed; returns the number of rows it holds."""
        with self._lock:
            rows = list(self._rows)
            dirty, self._dirty = self._dirty, False
        frame = self._initial
        if rows:
            frame = pd.concat([frame, pd.DataFrame(rows, columns=self._columns)], ignore_index=True)
        if dirty:
            self._write(frame)
        return len(frame)

    def _write(self, frame: pd.DataFrame) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        frame.to_csv(tmp, index=False)
        os.replace(tmp, self.path)


__all__ = [
    "SHIFT_FACTOR",
    "TARGET",
    "DemoData",
    "TrafficRow",
    "TrainingTable",
    "apply_shift",
    "load_dataset",
    "shifted_features",
    "traffic",
]
