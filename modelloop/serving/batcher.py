"""Adaptive batching: concurrent requests for one model version are scored in one `predict` call.

Used by `serving.hosting` (one `Batcher` per hosted version) and fed by `serving.core`. One asyncio task
takes the requests that are waiting (up to `max_batch_size` rows), waits at most `max_wait` seconds for more
when the batch is not full (closing it earlier when no request arrives for `max_idle` seconds: a lone caller
is not kept waiting, a busy stream of calls fills the batch; a wake-up late by more than max_idle / 2, when
the process was not running and could not read what arrived, does not count as a pause), and runs
`predict` in a dedicated worker thread; while it runs, the event loop keeps accepting calls, so batches grow
with the load. Results are split back to each request exactly by row offsets. A caller that goes away
(cancelled future) is skipped, never breaks the loop. `close()` stops taking new work and finishes
everything already queued (the drain of a hot swap).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from modelloop.contract.registry import Route

from .errors import NotReadyError
from .schema import Features

log = logging.getLogger(__name__)

Result = tuple[np.ndarray[Any, Any], np.ndarray[Any, Any] | None]


@dataclass
class Item:
    """One request's rows waiting to be predicted, with what the prediction log needs about it."""

    features: Features
    request_id: str
    started: float
    future: asyncio.Future[Result] = field(repr=False)
    route: Route = Route.CHAMPION


#: called in the worker thread after each predict: (items, features, predictions, finished_at)
AfterBatch = Callable[[list[Item], Features, np.ndarray[Any, Any], float], None]


class Batcher:
    """Batches requests for one predict function (see the module docstring)."""

    def __init__(
        self,
        predict: Callable[[Features], Result],
        *,
        name: str,
        max_batch_size: int = 64,
        max_wait: float = 0.001,
        max_idle: float | None = None,
        max_queue: int = 10_000,
        after_batch: AfterBatch | None = None,
        on_batch_size: Callable[[int], None] | None = None,
        on_queue_depth: Callable[[int], None] | None = None,
    ) -> None:
        self._predict = predict
        self.name = name
        self.max_batch_size = max(1, max_batch_size)
        self.max_wait = max(0.0, max_wait)
        self.max_idle = self.max_wait if max_idle is None else max(0.0, min(max_idle, self.max_wait))
        self.max_queue = max_queue
        self._after_batch = after_batch
        self._on_batch_size = on_batch_size
        self._on_queue_depth = on_queue_depth
        self._loop = asyncio.get_running_loop()
        self._pending: deque[Item] = deque()
        self._pending_rows = 0
        self._last_arrival = 0.0
        self._waiter: asyncio.Future[None] | None = None
        self._wake_rows = 1
        self._closing = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"predict-{name}")
        self._task = self._loop.create_task(self._run(), name=f"batcher-{name}")

    @property
    def depth(self) -> int:
        return len(self._pending)

    def submit(
        self,
        features: Features,
        request_id: str,
        *,
        route: Route = Route.CHAMPION,
        started: float | None = None,
    ) -> asyncio.Future[Result]:
        """Queue rows for prediction; the future resolves to this request's (predictions, probabilities)."""
        if self._closing:
            raise NotReadyError(f"model {self.name} is draining")
        if len(self._pending) >= self.max_queue:
            raise NotReadyError(f"model {self.name} has {self.max_queue} requests waiting; retry later")
        loop = self._loop
        future: asyncio.Future[Result] = loop.create_future()
        self._pending.append(Item(features, request_id, started or time.perf_counter(), future, route))
        self._pending_rows += features.n_rows
        self._last_arrival = loop.time()
        # the gatherer is woken only when it has something to do: a first request, or a full batch (a
        # partly filled batch is closed by its own timer: no wake-up and no timer per request)
        if self._waiter is not None and self._pending_rows >= self._wake_rows:
            _wake(self._waiter)
        return future

    async def close(self) -> None:
        """Finish every queued request, then stop the task and the worker thread."""
        self._closing = True
        if self._waiter is not None:
            _wake(self._waiter)
        await asyncio.shield(self._task)
        self._executor.shutdown(wait=False)

    async def _run(self) -> None:
        loop = self._loop
        while True:
            if not self._pending:
                if self._closing:
                    return
                await self._sleep(1, None)  # until a request arrives (or close)
                continue
            opened = loop.time()
            items, rows = self._take([], 0)
            if not self._pending and self.max_wait > 0:
                deadline = opened + self.max_wait
                awake = opened  # idleness counts from the last arrival or from here, whichever is later
                while rows < self.max_batch_size and not self._closing:
                    # closes at the deadline, or earlier once no request arrived for max_idle
                    until = min(deadline, max(self._last_arrival, awake) + self.max_idle)
                    if loop.time() >= until:
                        break
                    await self._sleep(self.max_batch_size - rows, until)
                    items, rows = self._take(items, rows)
                    if self._pending:  # the next request does not fit: the batch is full
                        break
                    if loop.time() - until > self.max_idle / 2:
                        # woken late: the process was not running (descheduled, CPU-throttled) or the loop
                        # was held, so calls that came meanwhile are not read yet; no arrival seen is not a
                        # pause in arrivals: max_idle more from now (measured: two workers sharing a core
                        # closed batches of 10 rows where one worker alone had 34)
                        awake = loop.time()
            await self._process(items)

    def _take(self, items: list[Item], rows: int) -> tuple[list[Item], int]:
        """Move waiting requests into the batch while they fit (the first one always does)."""
        pending = self._pending
        while pending:
            n = pending[0].features.n_rows
            if items and rows + n > self.max_batch_size:
                break  # first in the next batch
            items.append(pending.popleft())
            self._pending_rows -= n
            rows += n
        return items, rows

    async def _sleep(self, rows: int, until: float | None) -> None:
        """Until `rows` more rows are waiting, `until` (loop time) passes, or close()."""
        waiter = self._loop.create_future()
        self._waiter, self._wake_rows = waiter, rows
        timer = None if until is None else self._loop.call_at(until, _wake, waiter)
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()

    async def _process(self, items: list[Item]) -> None:
        live = [it for it in items if not it.future.done()]  # callers that went away are skipped
        if self._on_queue_depth is not None:
            self._on_queue_depth(self.depth)
        if not live:
            return
        try:
            features = Features.concat([it.features for it in live])
            pred, proba = await asyncio.get_running_loop().run_in_executor(
                self._executor, self._predict_and_log, live, features
            )
        except Exception as exc:
            log.error(
                "model %s: predict failed for a batch of %d request(s)", self.name, len(live), exc_info=True
            )
            for it in live:
                if not it.future.done():
                    it.future.set_exception(exc)
            return
        offset = 0
        for it in live:
            n = it.features.n_rows
            if not it.future.done():
                it.future.set_result(
                    (pred[offset : offset + n], None if proba is None else proba[offset : offset + n])
                )
            offset += n

    def _predict_and_log(self, items: list[Item], features: Features) -> Result:
        pred, proba = self._predict(features)
        if len(pred) != features.n_rows:
            raise RuntimeError(
                f"model {self.name} returned {len(pred)} predictions for {features.n_rows} rows"
            )
        if self._on_batch_size is not None:
            self._on_batch_size(features.n_rows)
        if self._after_batch is not None:
            try:
                self._after_batch(items, features, pred, time.perf_counter())
            except Exception:
                log.error(
                    "model %s: recording a batch in the prediction log failed", self.name, exc_info=True
                )
        return pred, proba


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


__all__ = ["AfterBatch", "Batcher", "Item", "Result"]
