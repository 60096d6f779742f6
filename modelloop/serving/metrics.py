"""Prometheus metrics of one scoring server, in their own registry (several servers can share a process in
tests). Created by `serving.app`, updated by `serving.core`, `serving.batcher`, `serving.hosting` and
`modelloop.serving.predlog_writer`, exposed over HTTP by `modelloop.serving.app` (`--metrics-port`).

With several worker processes (`serving.workers`) prometheus_client runs in its multiprocess mode
(`PROMETHEUS_MULTIPROC_DIR`, set by the supervisor before a worker imports it): each worker writes its values
to files there and the supervisor's endpoint sums them (`multiprocess_registry`). Counters and histograms add
up; the gauges say how: queue depth and buffered records sum over live workers, model info is the largest
value of a live worker. A version no longer hosted keeps its model-info series at 0 there (prometheus_client
cannot remove a series in that mode)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values

#: prometheus_client chose its multiprocess value class (PROMETHEUS_MULTIPROC_DIR was set when it loaded)
_MULTIPROCESS = bool(getattr(values.ValueClass, "_multiprocess", False))

_LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class ServingMetrics:
    """Every metric the scoring server exports."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "modelloop_serving_requests", "Inference requests by model, version and gRPC status code.",
            ["model", "version", "code"], registry=r,
        )  # fmt: skip
        self.latency = Histogram(
            "modelloop_serving_request_latency_seconds", "Server-side latency of inference requests.",
            ["model"], buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.batch_size = Histogram(
            "modelloop_serving_batch_size", "Rows per predict call (adaptive batching).",
            ["model", "version"], buckets=_BATCH_BUCKETS, registry=r,
        )  # fmt: skip
        self.queue_depth = Gauge(
            "modelloop_serving_queue_depth", "Requests waiting for a predict call.", ["model", "version"],
            registry=r, multiprocess_mode="livesum",
        )  # fmt: skip
        self.model_info = Gauge(
            "modelloop_serving_model_info", "1 for every hosted model version, by role.",
            ["model", "version", "role"], registry=r, multiprocess_mode="livemax",
        )  # fmt: skip
        self.shadow_skipped = Counter(
            "modelloop_serving_shadow_skipped", "Requests the shadow challenger did not score (queue full or "
            "input invalid for it).", ["model", "reason"], registry=r,
        )  # fmt: skip
        self.predlog_buffered = Gauge(
            "modelloop_serving_predlog_buffered_records", "Prediction-log records waiting to be written.",
            registry=r, multiprocess_mode="livesum",
        )  # fmt: skip
        self.predlog_written = Counter(
            "modelloop_serving_predlog_written_records", "Prediction-log records written.", registry=r
        )
        self.predlog_dropped = Counter(
            "modelloop_serving_predlog_dropped_records",
            "Prediction-log records dropped because the buffer was full while the database was down.",
            registry=r,
        )
        self.predlog_write_errors = Counter(
            "modelloop_serving_predlog_write_errors", "Failed prediction-log writes (retried).", registry=r
        )

    def drop_model_info(self, model: str, version: str, role: str) -> None:
        """A version no longer hosted: its info series goes; in multiprocess mode (which cannot remove a
        series from a worker's file) it stays at 0."""
        self.model_info.labels(model, version, role).set(0)
        if not _MULTIPROCESS:
            self.model_info.remove(model, version, role)


def multiprocess_registry(path: str) -> CollectorRegistry:
    """A registry reading every worker's metric files under `path` (`PROMETHEUS_MULTIPROC_DIR`)."""
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
    return registry


__all__ = ["ServingMetrics", "multiprocess_registry"]
