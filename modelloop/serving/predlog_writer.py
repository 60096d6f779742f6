"""Writes scored instances to the prediction log asynchronously, in batches, off the response path.

`serving.core` calls `record(...)` from the predict worker thread after each batch (O(1): the arrays are
queued as they are). A background thread flushes every `flush_interval` seconds (or sooner when
`flush_rows` records wait): it groups what waits by (model, version, route), builds one Arrow table per group
(meta columns `_time, _request_id, _latency_ms, _prediction` + one column per feature, see
`contract.predlog.schema`) and writes it through a `PredictionLogStore`. When the database is down the
records stay in a bounded buffer (`max_buffered` records) and the write is retried with backoff; records
that arrive while the buffer is full are dropped, counted in `modelloop_serving_predlog_dropped_records`
and logged as a warning, never silently. `close()` flushes what it can.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from modelloop.contract.errors import UnavailableError
from modelloop.contract.predlog import (
    LATENCY_COLUMN,
    PREDICTION_COLUMN,
    REQUEST_ID_COLUMN,
    TIME_COLUMN,
    PredictionBatch,
    PredictionLogStore,
)
from modelloop.contract.registry import Route

from .metrics import ServingMetrics

log = logging.getLogger(__name__)


@dataclass
class _Chunk:
    model: str
    version: str
    route: Route
    columns: dict[str, np.ndarray[Any, Any]]
    predictions: np.ndarray[Any, Any]
    request_ids: list[str]
    latencies_ms: np.ndarray[Any, Any]
    times: np.ndarray[Any, Any]

    @property
    def n(self) -> int:
        return len(self.request_ids)


class PredictionLogWriter:
    """Buffers records and writes them in batches from a background thread (see the module docstring)."""

    def __init__(
        self,
        store: PredictionLogStore,
        *,
        metrics: ServingMetrics,
        max_buffered: int = 200_000,
        flush_interval: float = 0.5,
        flush_rows: int = 20_000,
        max_backoff: float = 10.0,
    ) -> None:
        self._store = store
        self._metrics = metrics
        self.max_buffered = max_buffered
        self.flush_interval = flush_interval
        self.flush_rows = flush_rows
        self.max_backoff = max_backoff
        self._pending: deque[_Chunk] = deque()
        self._buffered = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.dropped = 0
        self.written = 0
        self._last_drop_warning = 0.0
        self._thread = threading.Thread(target=self._loop, name="predlog-writer", daemon=True)
        self._thread.start()

    @property
    def buffered(self) -> int:
        return self._buffered

    def record(
        self,
        *,
        model: str,
        version: str,
        route: Route,
        columns: dict[str, np.ndarray[Any, Any]],
        predictions: np.ndarray[Any, Any],
        request_ids: list[str],
        latencies_ms: np.ndarray[Any, Any],
        times: np.ndarray[Any, Any],
    ) -> None:
        """Queue records of one model version and route; never blocks on the database."""
        chunk = _Chunk(model, version, route, columns, predictions, request_ids, latencies_ms, times)
        with self._lock:
            if self._buffered + chunk.n > self.max_buffered:
                self.dropped += chunk.n
                self._metrics.predlog_dropped.inc(chunk.n)
                now = time.monotonic()
                if now - self._last_drop_warning > 10:
                    self._last_drop_warning = now
                    log.warning(
                        "prediction log buffer full (%d records): dropped %d so far for %s/%s",
                        self._buffered, self.dropped, model, version,
                    )  # fmt: skip
                return
            self._pending.append(chunk)
            self._buffered += chunk.n
            self._metrics.predlog_buffered.set(self._buffered)
        if self._buffered >= self.flush_rows:
            self._wake.set()

    def flush(self) -> bool:
        """Write everything waiting; False when the database refused (the records stay buffered)."""
        with self._lock:
            chunks = list(self._pending)
        if not chunks:
            return True
        groups: dict[tuple[str, str, Route], list[_Chunk]] = {}
        for c in chunks:
            groups.setdefault((c.model, c.version, c.route), []).append(c)
        for (model, version, route), group in groups.items():
            try:
                self._store.write(PredictionBatch(model, version, route, _table(group)))
            except UnavailableError as exc:
                self._metrics.predlog_write_errors.inc()
                log.warning("prediction log unavailable (%s); %d records buffered", exc, self._buffered)
                return False
            except Exception:
                # a batch the store rejects for good would block the buffer forever: count it as dropped
                n = sum(c.n for c in group)
                log.error(
                    "prediction log rejected %d records of %s/%s; dropped", n, model, version, exc_info=True
                )
                self._forget(group, dropped=True)
                continue
            self._forget(group, dropped=False)
        return True

    def _forget(self, group: list[_Chunk], *, dropped: bool) -> None:
        n = sum(c.n for c in group)
        ids = {id(c) for c in group}
        with self._lock:
            self._pending = deque(c for c in self._pending if id(c) not in ids)
            self._buffered -= n
            self._metrics.predlog_buffered.set(self._buffered)
        if dropped:
            self.dropped += n
            self._metrics.predlog_dropped.inc(n)
        else:
            self.written += n
            self._metrics.predlog_written.inc(n)

    def _loop(self) -> None:
        backoff = self.flush_interval
        while not self._stop.is_set():
            self._wake.wait(backoff)
            self._wake.clear()
            if self._stop.is_set():
                break
            ok = self.flush()
            backoff = self.flush_interval if ok else min(self.max_backoff, max(backoff * 2, 0.5))

    def close(self, *, timeout: float = 10.0) -> None:
        """Stop the thread and write what is left until `timeout`; what remains is counted as dropped."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=timeout)
        deadline = time.monotonic() + timeout
        while self._buffered and time.monotonic() < deadline:
            if self.flush():
                break
            time.sleep(0.5)
        if self._buffered:
            log.error("prediction log still unavailable at shutdown: %d records dropped", self._buffered)
            with self._lock:
                self.dropped += self._buffered
                self._metrics.predlog_dropped.inc(self._buffered)
                self._pending.clear()
                self._buffered = 0


def _table(chunks: list[_Chunk]) -> pa.Table:
    data: dict[str, Any] = {
        TIME_COLUMN: np.concatenate([c.times for c in chunks]),
        REQUEST_ID_COLUMN: pa.array([r for c in chunks for r in c.request_ids], pa.string()),
        LATENCY_COLUMN: np.concatenate([c.latencies_ms for c in chunks]),
        PREDICTION_COLUMN: _array(np.concatenate([c.predictions for c in chunks])),
    }
    for name in chunks[0].columns:
        data[name] = _array(np.concatenate([c.columns[name] for c in chunks]))
    return pa.table(data)


def _array(values: np.ndarray[Any, Any]) -> pa.Array:
    if values.dtype == object:
        return pa.array([None if v is None else str(v) for v in values], pa.string())
    return pa.array(values)


__all__ = ["PredictionLogWriter"]
