"""Monitoring windows, and reading one window of the prediction log in bounded memory.

`Window` names a half-open time range [start, end) with a deterministic id (its identity in MLflow).
`WindowReader` is called by `monitoring.job`: a first pass reads the predictions, request ids, versions and
routes (and as many feature columns as the memory budget allows); later passes read the remaining feature
columns a group at a time, so memory stays bounded by the budget, not by the window's width.

Rows answered by the primary version (the version that served most `champion` rows; shadow rows are
scored off the response path and left out) are the ones compared against that version's reference profile.
The other rows are counted and reported by version and route, never silently dropped.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from modelloop.contract.errors import InvalidInputError
from modelloop.contract.predlog import (
    PREDICTION_COLUMN,
    REQUEST_ID_COLUMN,
    ROUTE_COLUMN,
    TIME_COLUMN,
    VERSION_COLUMN,
    PredictionLogStore,
)
from modelloop.contract.registry import Route
from modelloop.contract.timestamps import unix_seconds

log = logging.getLogger(__name__)

_NOT_FEATURES = {
    TIME_COLUMN,
    REQUEST_ID_COLUMN,
    PREDICTION_COLUMN,
    VERSION_COLUMN,
    ROUTE_COLUMN,
    "_latency_ms",
}


def parse_time(text: str) -> float:
    """Unix seconds from an ISO-8601 time (UTC unless it says otherwise) or a number of unix seconds."""
    try:
        return unix_seconds(text)
    except ValueError:
        raise InvalidInputError("time must be ISO-8601 (e.g. 2026-11-23T08:15:00Z) or unix seconds") from None


def _stamp(t: float) -> str:
    dt = datetime.fromtimestamp(t, UTC)
    text = dt.strftime("%Y%m%dT%H%M%S")
    if dt.microsecond:
        text += f".{dt.microsecond:06d}".rstrip("0")
    return text + "Z"


@dataclass(frozen=True)
class Window:
    """The half-open time range [start, end) in unix seconds."""

    start: float
    end: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.start) and math.isfinite(self.end)) or self.end <= self.start:
            raise InvalidInputError("window end must be after its start")

    @property
    def id(self) -> str:
        """Deterministic identity, e.g. 20261123T081500Z-20261123T083000Z."""
        return f"{_stamp(self.start)}-{_stamp(self.end)}"

    @property
    def length(self) -> float:
        return self.end - self.start

    def iso(self) -> tuple[str, str]:
        return (
            datetime.fromtimestamp(self.start, UTC).isoformat(),
            datetime.fromtimestamp(self.end, UTC).isoformat(),
        )

    @classmethod
    def last_complete(cls, length: float, now: float) -> Window:
        """The last window of `length` seconds that ended at or before `now`, aligned to multiples of the
        length since the epoch (so every run over the same period has the same identity)."""
        end = math.floor(now / length) * length
        return cls(end - length, end)


@dataclass
class WindowRows:
    """The first pass over a window: who answered, what they predicted, which rows are compared."""

    total_rows: int
    version: str | None
    served: np.ndarray  # boolean mask over the window's rows: the primary version's answered rows
    predictions: pa.ChunkedArray
    request_ids: pa.ChunkedArray
    feature_columns: list[str]
    others: dict[str, int] = field(default_factory=dict)  # "version/route" -> rows not compared

    @property
    def served_rows(self) -> int:
        return int(self.served.sum())


def _bools(mask: pa.ChunkedArray | pa.Array) -> np.ndarray:
    return np.asarray(mask.to_numpy(zero_copy_only=False), dtype=bool)


class WindowReader:
    """Reads one model's window from the prediction log within a memory budget (bytes of feature values)."""

    def __init__(
        self, store: PredictionLogStore, model_name: str, window: Window, *, memory_budget: int = 512 << 20
    ) -> None:
        self._store = store
        self._model = model_name
        self._window = window
        self._budget = max(memory_budget, 1)
        self._first: dict[str, pa.ChunkedArray] = {}
        self._rows = 0

    def _read(self, columns: Sequence[str]) -> pa.Table | None:
        tables = list(
            self._store.iter_window(self._model, self._window.start, self._window.end, columns=columns)
        )
        if not tables:
            return None
        return pa.concat_tables(tables, promote_options="permissive")

    def first_pass(self) -> WindowRows:
        """Read predictions, request ids, versions, routes and the first group of feature columns (as many
        as the memory budget holds), in one pass over the window's blocks."""
        upper = self._store.count(self._model, self._window.start, self._window.end)
        per_pass = max(1, self._budget // max(8 * upper, 1))
        names: list[str] | None = None
        keep: list[str] = []
        tables = []
        for block in self._store.iter_window(self._model, self._window.start, self._window.end):
            if names is None:  # the feature columns, as the first block names them
                names = [c for c in block.column_names if c not in _NOT_FEATURES]
                keep = [PREDICTION_COLUMN, REQUEST_ID_COLUMN, VERSION_COLUMN, ROUTE_COLUMN, *names[:per_pass]]
            present = set(block.schema.names)
            tables.append(block.select([c for c in keep if c in present]))
        if not tables or names is None:
            empty = np.zeros(0, dtype=bool)
            no_rows = pa.chunked_array([], pa.float64())
            return WindowRows(0, None, empty, no_rows, pa.chunked_array([], pa.string()), [])
        first_group = names[:per_pass]
        table = pa.concat_tables(tables, promote_options="permissive")
        self._rows = table.num_rows
        versions, routes = table.column(VERSION_COLUMN), table.column(ROUTE_COLUMN)
        champion = pc.equal(routes, str(Route.CHAMPION))
        tally = pc.value_counts(versions.filter(champion) if pc.any(champion).as_py() else versions)
        counts = dict(zip(tally.field("values").to_pylist(), tally.field("counts").to_pylist(), strict=True))
        version = str(max(sorted(counts), key=lambda v: counts[v]))
        is_version = pc.equal(versions, version)
        served = _bools(pc.and_(pc.not_equal(routes, str(Route.SHADOW)), is_version))
        if not served.any():
            served = _bools(is_version)
        others: dict[str, int] = {}
        if not served.all():
            rest = table.select([VERSION_COLUMN, ROUTE_COLUMN]).filter(pa.array(~served))
            grouped = rest.group_by([VERSION_COLUMN, ROUTE_COLUMN]).aggregate([([], "count_all")])
            for row in grouped.to_pylist():
                others[f"{row[VERSION_COLUMN]}/{row[ROUTE_COLUMN]}"] = int(row["count_all"])
        if others:
            log.info(
                "model %s window %s: %d rows of other versions or routes not compared: %s",
                self._model,
                self._window.id,
                int((~served).sum()),
                dict(others),
            )
        mask = None if served.all() else pa.array(served)

        def rows_served(column: pa.ChunkedArray) -> pa.ChunkedArray:
            return column if mask is None else column.filter(mask)

        self._first = {c: rows_served(table.column(c)) for c in first_group if c in table.column_names}
        return WindowRows(
            total_rows=table.num_rows,
            version=version,
            served=served,
            predictions=rows_served(table.column(PREDICTION_COLUMN)),
            request_ids=rows_served(table.column(REQUEST_ID_COLUMN)),
            feature_columns=names,
            others=others,
        )

    def columns(self, rows: WindowRows, names: Sequence[str]) -> Iterator[tuple[str, pa.ChunkedArray | None]]:
        """Yield (name, the served rows of that column or None when the log lacks it), a group at a time."""
        per_pass = max(1, self._budget // max(8 * max(self._rows, 1), 1))
        pending = [n for n in names if n not in self._first]
        for name in [n for n in names if n in self._first]:
            yield name, self._first.pop(name)
        mask = None if rows.served.all() else pa.array(rows.served)
        for i in range(0, len(pending), per_pass):
            group = pending[i : i + per_pass]
            table = self._read(group)
            if table is not None and table.num_rows > self._rows:
                table = table.slice(
                    0, self._rows
                )  # blocks flushed since the first pass come last: ignore them
            columns: dict[str, pa.ChunkedArray | None] = {
                name: None
                if table is None or name not in table.column_names or table.num_rows != self._rows
                else table.column(name)
                for name in group
            }
            del table  # the group's columns only: released one by one as they are handed out
            for name in group:
                column = columns.pop(name)
                yield name, column if column is None or mask is None else pc.filter(column, mask)
            del column


__all__ = ["Window", "WindowReader", "WindowRows", "parse_time"]
