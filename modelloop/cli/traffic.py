"""A traffic generator: an internal service calling a binding over gRPC through the Python client, at a steady
rate, and later reporting the true labels of what it asked about. Used by `modelloop demo`.

Every call is counted (sent, served, failed by error class, answered by which version); a failure is never
retried or hidden. Labels are handed to `on_label` in batches (the demo records them as feedback and adds
the rows to the training table), off the request path.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from modelloop.cli.demo_data import TrafficRow
from modelloop.contract.errors import ModelloopError

if TYPE_CHECKING:
    from modelloop.client import ScoringClient

log = logging.getLogger(__name__)


@dataclass
class TrafficStats:
    """What the generator saw."""

    sent: int = 0
    served: int = 0
    failed: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    versions: Counter[str] = field(default_factory=Counter)
    first_seen: dict[str, float] = field(default_factory=dict)  # version -> when it first answered
    latencies_ms: list[float] = field(default_factory=list)

    def latency_ms(self, quantile: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(quantile * len(ordered)))]


Labelled = list[tuple[str, TrafficRow]]


class TrafficGenerator:
    """Sends one row per call to `model`, about `rate` calls a second, until stopped (module docstring)."""

    def __init__(
        self,
        client: ScoringClient,
        model: str,
        rows: Iterator[TrafficRow],
        *,
        rate: float,
        on_label: Callable[[Labelled], None],
        label_every: float = 1.0,
        timeout: float = 10.0,
    ) -> None:
        self.client = client
        self.model = model
        self.rows = rows
        self.interval = 1.0 / rate
        self.on_label = on_label
        self.label_every = label_every
        self.timeout = timeout
        self.stats = TrafficStats()
        self._pending: Labelled = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._send_loop, name="traffic", daemon=True),
            threading.Thread(target=self._label_loop, name="traffic-labels", daemon=True),
        ]

    def start(self) -> TrafficGenerator:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> TrafficStats:
        """Stop sending, hand over the last labels, and return the counts."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
        self._flush_labels()
        return self.stats

    def _send_loop(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            row = next(self.rows)
            self._send(row)
            next_at += self.interval
            delay = next_at - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
            else:
                next_at = time.monotonic()  # behind schedule: do not burst to catch up

    def _send(self, row: TrafficRow) -> None:
        request_id = uuid.uuid4().hex
        started = time.perf_counter()
        with self._lock:
            self.stats.sent += 1
        try:
            result = self.client.predict(
                self.model, [row.features], request_id=request_id, timeout=self.timeout
            )
        except ModelloopError as exc:
            with self._lock:
                self.stats.failed += 1
                self.stats.errors[type(exc).__name__] += 1
            log.warning("call %d failed: %s", self.stats.sent, exc)
            return
        elapsed = (time.perf_counter() - started) * 1000.0
        with self._lock:
            self.stats.served += 1
            self.stats.versions[result.model_version] += 1
            self.stats.first_seen.setdefault(result.model_version, time.time())
            self.stats.latencies_ms.append(elapsed)
            self._pending.append((result.request_id or request_id, row))

    def _label_loop(self) -> None:
        while not self._stop.wait(self.label_every):
            self._flush_labels()

    def _flush_labels(self) -> None:
        with self._lock:
            batch, self._pending = self._pending, []
        if not batch:
            return
        try:
            self.on_label(batch)
        except ModelloopError as exc:
            log.warning("could not record %d labels (%s); keeping them for the next try", len(batch), exc)
            with self._lock:
                self._pending[:0] = batch


__all__ = ["Labelled", "TrafficGenerator", "TrafficStats"]
