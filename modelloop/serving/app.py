"""Runs one scoring server process: builds the parts from `ServeSettings`, loads and warms the models,
serves until SIGTERM/SIGINT, then drains. Called by `modelloop serve` (modelloop/cli/serve.py).

Order: open the prediction log (lazily: a database that is down at start only means buffering), start the
gRPC server with health NOT_SERVING, start the metrics endpoint, load every model (and the challenger),
freeze the heap built so far (`gc.freeze`), mark health SERVING, write the port file (its format is
`contract.port_file`'s). On SIGTERM: health NOT_SERVING, refuse new calls, let in-flight ones finish within
the grace period, drain the batchers, flush the prediction log, return. `run` is those steps in order:
`_build`, `_start`, `_serve` (load, ready, wait for the signal), `_drain`.

An unreachable registry at start fails the run (UnavailableError), unless `wait_for_registry`: then the
loads are tried again with backoff, health NOT_SERVING meanwhile. Loads run in daemon threads
(`model_host.DetachedLoader`): SIGTERM while loading or waiting abandons them, and a hot swap still waiting
on MLflow when the grace period ends is abandoned too, so the process never outlives its grace period.

One of several worker processes (`serving.workers`) runs the same steps with a `Supervised` link to its
supervisor: the port is shared (SO_REUSEPORT), hot swaps go through the supervisor (`link.admin`), the link
learns when the worker is ready, health waits for every worker, and a restarted worker loads what the others
serve now (`link.plan`) before it binds (`link.late_bind`), so no call reaches it while it loads.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Protocol
from wsgiref.simple_server import WSGIServer

from modelloop.contract.errors import ConfigError, ModelloopError, UnavailableError
from modelloop.contract.model_ref import parse_model_ref
from modelloop.contract.port_file import Ports, write_port_file
from modelloop.contract.registry import Role

from .core import InferenceCore, prediction_recorder
from .grpc_server import ScoringServer, ServerOptions, TlsConfig
from .hosting import BatchingConfig, ModelAdmin, ModelHost
from .metrics import ServingMetrics
from .model_host import DetachedLoader, load_model
from .predlog_writer import PredictionLogWriter
from .settings import ServeSettings

log = logging.getLogger(__name__)

#: with `wait_for_registry`: seconds before the second attempt to load from an unreachable registry, doubling
REGISTRY_RETRY_FIRST = 1.0
#: ... up to this many seconds between attempts
REGISTRY_RETRY_MOST = 30.0


def _tls(settings: ServeSettings) -> TlsConfig | None:
    if settings.tls_cert_file is None and settings.tls_key_file is None:
        return None
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        raise ConfigError("TLS needs both tls_cert_file and tls_key_file")
    try:
        return TlsConfig(
            cert_chain=settings.tls_cert_file.read_bytes(),
            private_key=settings.tls_key_file.read_bytes(),
            client_ca=settings.tls_client_ca_file.read_bytes() if settings.tls_client_ca_file else None,
        )
    except OSError as exc:
        raise ConfigError(f"TLS file unreadable: {exc.strerror}") from None


def _read_token(path: Path | None, what: str) -> str | None:
    if path is None:
        return None
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"{what} unreadable: {exc.strerror}") from None
    if not token:
        raise ConfigError(f"{what} is empty")
    return token


@dataclass(frozen=True)
class Challenger:
    """A challenger to load at start: model name, version or alias, mode, canary share."""

    name: str
    ref: str
    mode: str
    share: float


@dataclass(frozen=True)
class LoadPlan:
    """What a process loads at start: champions (name, version or alias) and challengers."""

    refs: list[tuple[str, str]]
    challengers: list[Challenger]


class Supervised(Protocol):
    """A worker's link to its supervisor (`serving.workers.worker.WorkerLink`), as `run` uses it."""

    @property
    def admin(self) -> ModelAdmin:
        """Hot swaps of every worker."""

    late_bind: bool  # load first, then bind (a restarted worker)
    plan: LoadPlan | None  # what to load instead of the settings' models (a restarted worker)

    def attach(self, host: ModelHost, server: ScoringServer) -> None:
        """The worker's parts, built: commands from the supervisor can be carried out from now on."""

    def started(self, port: int, metrics_port: int | None) -> None:
        """The worker serves."""


@dataclass
class _Process:
    """The parts of one scoring-server process, built from its settings by `_build`."""

    plan: LoadPlan
    server: ScoringServer
    host: ModelHost
    loader: DetachedLoader
    metrics: ServingMetrics
    writer: PredictionLogWriter | None
    metrics_server: WSGIServer | None = None


def load_plan(settings: ServeSettings) -> LoadPlan:
    """The models to serve and the challenger, checked: at least one model, the challenger one of them."""
    if not settings.models:
        raise ConfigError("no model to serve: pass --model NAME@ALIAS or NAME/VERSION")
    refs = [parse_model_ref(m) for m in settings.models]
    challengers = []
    if settings.challenger:
        name, ref = parse_model_ref(settings.challenger)
        if name not in {n for n, _ in refs}:
            raise ConfigError(f"challenger model {name} is not one of the --model names")
        challengers.append(Challenger(name, ref, settings.challenger_mode, settings.canary_share))
    return LoadPlan(refs, challengers)


def _prediction_log(settings: ServeSettings, metrics: ServingMetrics) -> PredictionLogWriter | None:
    """The prediction-log writer (opened lazily: a database down at start only means buffering), or None."""
    if not settings.prediction_log_enabled():
        return None
    from modelloop.contract.predlog import SqlPredictionLog

    url = settings.resolved_prediction_log_url()
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return PredictionLogWriter(
        SqlPredictionLog(url, create=False),
        metrics=metrics,
        max_buffered=settings.predlog_max_buffered,
        flush_interval=settings.predlog_flush_interval,
    )


def _build(settings: ServeSettings, link: Supervised | None = None) -> _Process:
    """Build the host, the core and the gRPC server (nothing started, nothing loaded yet)."""
    plan = load_plan(settings) if link is None or link.plan is None else link.plan
    options = ServerOptions(
        token=_read_token(settings.token_file, "token_file"),
        admin_token=_read_token(settings.admin_token_file, "admin_token_file"),
        reflection=settings.reflection,
        max_message_bytes=settings.max_message_bytes,
        max_concurrent_rpcs=settings.max_concurrent_rpcs,
        max_connection_age_ms=settings.max_connection_age_ms,
        tls=_tls(settings),
        reuse_port=link is not None,
    )
    metrics = ServingMetrics()
    writer = _prediction_log(settings, metrics)
    loader = DetachedLoader(partial(load_model, settings.tracking_uri, max_rows=settings.max_rows))
    host = ModelHost(
        loader,
        metrics=metrics,
        batching=BatchingConfig(
            settings.max_batch_size,
            settings.max_batch_wait_ms / 1000.0,
            settings.max_queue,
            max_idle=settings.max_batch_idle_ms / 1000.0,
        ),
        hooks=prediction_recorder(writer) if writer else None,
    )
    core = InferenceCore(host, metrics=metrics, reject_unseen=settings.unseen_categories == "reject")
    server = ScoringServer(core, options, admin=link.admin if link else None, peers=link is not None)
    if link is not None:
        link.attach(host, server)
    return _Process(plan, server, host, loader, metrics, writer)


async def _start(process: _Process, settings: ServeSettings) -> Ports:
    """Start the gRPC server (health NOT_SERVING for every model while it loads) and the metrics endpoint."""
    port = await process.server.start(settings.host, settings.port)
    metrics_port = None
    if settings.metrics_port is not None:
        from prometheus_client import start_http_server

        process.metrics_server, _ = start_http_server(
            settings.metrics_port, settings.host, registry=process.metrics.registry
        )
        metrics_port = int(process.metrics_server.server_port)
    for name, _ in process.plan.refs:  # per-model health answers NOT_SERVING (not NOT_FOUND) while loading
        await process.server.mark(name, serving=False)
    return Ports(grpc=port, metrics=metrics_port)


async def _serve(
    process: _Process,
    settings: ServeSettings,
    ports: Ports | None,
    stop: asyncio.Event,
    started: Callable[[int, int | None], None] | None,
) -> None:
    """Load every model, then serve until `stop` is set (at once, when it is set while loading). Without
    `ports` the server starts once the models are loaded (a restarted worker)."""
    loading = _load_models(process.host, process.plan, settings)
    if await _until_stopped(loading, stop):
        if ports is None:
            ports = await _start(process, settings)
        await _ready(process.server, settings, ports)
        if started is not None:
            started(ports.grpc, ports.metrics)
        await stop.wait()
    log.info("stopping: draining in-flight calls (grace %.0fs)", settings.grace_period)


async def _drain(process: _Process, settings: ServeSettings) -> None:
    """Refuse new calls, let in-flight ones finish within the grace period, flush and close everything."""
    await process.server.stop(settings.grace_period)
    # a load still waiting on MLflow (startup, or a swap past the grace) is left behind
    process.loader.abandon()
    await process.host.close()
    if process.writer is not None:
        await asyncio.to_thread(process.writer.close)
    if process.metrics_server is not None:
        with contextlib.suppress(Exception):
            process.metrics_server.shutdown()
    gc.unfreeze()  # embedded use (tests): what died since can be collected again


async def run(
    settings: ServeSettings,
    *,
    stop: asyncio.Event | None = None,
    started: Callable[[int, int | None], None] | None = None,
    link: Supervised | None = None,
) -> None:
    """Serve until SIGTERM or SIGINT (see the module docstring). Embedded use (tests): pass `stop` (no signal
    handlers are installed then) and `started`, called with the gRPC and metrics ports once ready. A worker
    process passes its `link` to the supervisor."""
    process = _build(settings, link)
    if link is not None:
        started = link.started
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT) if stop is None else ()
    stop = stop or asyncio.Event()
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    try:
        ports = None if link is not None and link.late_bind else await _start(process, settings)
        await _serve(process, settings, ports, stop, started)
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        await _drain(process, settings)
    log.info("stopped")


async def _ready(server: ScoringServer, settings: ServeSettings, ports: Ports) -> None:
    """Every model is loaded and warm: freeze the heap, health SERVING, write the port file."""
    # the libraries and models loaded so far are long-lived: keep them out of the cyclic collector's
    # scans (measured at 64 concurrent calls: full collections of this heap put p99 at ~215 ms; ~72 ms
    # with the heap frozen)
    gc.collect()
    gc.freeze()
    await server.set_serving()
    if settings.port_file is not None:
        write_port_file(settings.port_file, ports)
    log.info(
        "serving %s on %s:%d (metrics port %s)",
        ", ".join(server.core.host.names()),
        settings.host,
        ports.grpc,
        ports.metrics,
    )


async def _until_stopped(work: Coroutine[Any, Any, None], stop: asyncio.Event) -> bool:
    """Run `work` until it is done (True) or `stop` is set first (False: `work` is cancelled)."""
    task = asyncio.ensure_future(work)
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
    if task.done():
        task.result()  # its error, if any
        return True
    log.info("stopping while loading: the load is abandoned")
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, ModelloopError):
        await task
    return False


async def _load_models(host: ModelHost, plan: LoadPlan, settings: ServeSettings) -> None:
    """Load every model (and the challenger). When the registry cannot be reached: fail, or with
    `wait_for_registry` try again with backoff (`REGISTRY_RETRY_FIRST` doubling up to `REGISTRY_RETRY_MOST`
    seconds) until it answers; health stays NOT_SERVING meanwhile."""
    delay = REGISTRY_RETRY_FIRST
    while True:
        try:
            for name, ref in plan.refs:
                if not host.has(name):  # a retry keeps what loaded before the registry went away
                    await host.load(name, ref)
            for c in plan.challengers:
                await host.load(c.name, c.ref, role=Role.CHALLENGER, mode=c.mode, canary_share=c.share)
            return
        except UnavailableError as exc:
            if not settings.wait_for_registry:
                raise UnavailableError(f"{exc}; --wait-for-registry keeps retrying") from None
            log.warning("waiting for the registry: %s; next attempt in %.0f s", exc, delay)
        await asyncio.sleep(delay)
        delay = min(delay * 2, REGISTRY_RETRY_MOST)


__all__ = ["Challenger", "LoadPlan", "Supervised", "load_plan", "run"]
