"""Adaptive batching: concurrent requests for one model version are scored in one `predict` call.

Used by `serving.hosting` (one `Batcher` per hosted version) and fed by `serving.core`. One asyncio task
takes the requests that are waiting (up to `max_batch_size` rows), waits at most `max_wait` seconds for more
when the batch is not full (closing it earlier when no request arrives for `max_idle` seconds: a lone caller
is not kept waiting, a busy stream of calls fills the batch), and runs `predict` in a dedicated worker
thread; while it runs, the event loop keeps accepting calls, so batches grow with the load. Results are
split back to each request exactly by row offsets. A caller that goes away (cancelled future) is skipped,
never breaks the loop. `close()` stops taking new work and finishes everything already queued (the drain of
a hot swap).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from modelloop.registry import Route

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
        self._queue: asyncio.Queue[Item | None] = asyncio.Queue()
        self._carry: Item | None = None
        self._closing = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"predict-{name}")
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"batcher-{name}")

    @property
    def depth(self) -> int:
        return self._queue.qsize() + (self._carry is not None)

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
        if self._queue.qsize() >= self.max_queue:
            raise NotReadyError(f"model {self.name} has {self.max_queue} requests waiting; retry later")
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(Item(features, request_id, started or time.perf_counter(), future, route))
        return future

    async def close(self) -> None:
        """Finish every queued request, then stop the task and the worker thread."""
        if not self._closing:
            self._closing = True
            self._queue.put_nowait(None)
        await asyncio.shield(self._task)
        self._executor.shutdown(wait=False)

    async def _run(self) -> None:
        stopping = False
        while not stopping or self._carry is not None:
            items, stopping = await self._gather(stopping)
            if items:
                await self._process(items)

    async def _gather(self, stopping: bool) -> tuple[list[Item], bool]:
        items: list[Item] = []
        rows = 0
        if self._carry is not None:
            items.append(self._carry)
            rows = self._carry.features.n_rows
            self._carry = None
        elif not stopping:
            first = await self._queue.get()
            if first is None:
                return [], True
            items.append(first)
            rows = first.features.n_rows
        rows, stopping = self._take_waiting(items, rows, stopping)
        if rows < self.max_batch_size and self.max_wait > 0 and not stopping and self._carry is None:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.max_wait
            while rows < self.max_batch_size and self._carry is None and not stopping:
                # wait for the next request until the deadline, or less: a pause in arrivals closes the batch
                until = min(deadline, loop.time() + self.max_idle)
                try:
                    async with asyncio.timeout_at(until):
                        item = await self._queue.get()
                except TimeoutError:
                    break
                if item is None:
                    stopping = True
                else:
                    rows = self._add(items, rows, item)
        return items, stopping

    def _take_waiting(self, items: list[Item], rows: int, stopping: bool) -> tuple[int, bool]:
        while rows < self.max_batch_size and self._carry is None and not self._queue.empty():
            item = self._queue.get_nowait()
            if item is None:
                return rows, True
            rows = self._add(items, rows, item)
        return rows, stopping

    def _add(self, items: list[Item], rows: int, item: Item) -> int:
        if items and rows + item.features.n_rows > self.max_batch_size:
            self._carry = item  # first in the next batch
            return rows
        items.append(item)
        return rows + item.features.n_rows

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


__all__ = ["AfterBatch", "Batcher", "Item", "Result"]
