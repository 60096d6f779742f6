"""The supervisor of `modelloop serve --workers N` (N > 1): the parent process. It serves no call itself.

- Port: it binds the gRPC port first with SO_REUSEPORT (port 0: the kernel picks one) and keeps that socket,
  never listening, for its whole life: the workers bind the same port (grpc's `grpc.so_reuseport`) and the
  kernel spreads new connections over the listening ones; a restarted worker gets the same port.
- Metrics: prometheus_client's multiprocess mode (`PROMETHEUS_MULTIPROC_DIR`, a fresh temporary folder);
  the supervisor alone serves the metrics port, summing every worker's files
  (`metrics.multiprocess_registry`).
- Hot swap (`WorkerLink` forwards every admin load and unload here): one at a time, under `_lock`. A load is
  prepared on every worker (loaded and warm beside what serves), and only when all succeeded committed on
  every worker (a plain switch each); any failure aborts the prepared ones and the old version keeps serving
  everywhere. The call returns after the last commit: every worker serves the new version by then. Then the
  supervisor's `plan` (what a restarted worker loads, versions pinned) takes the outcome.
- Health: a shared array of worker states (1: serves); each worker answers SERVING only when all are 1. Every
  change of a slot is followed by `("peers",)` to every worker, which then reads the array again (no worker
  polls it).
- A worker that dies is restarted (with the current plan, bound only once loaded) while the others serve;
  health says NOT_SERVING meanwhile. Restarting in the pod is faster than a pod restart and keeps the pod's
  other workers' connections; a worker that cannot be restarted `MAX_RESTART_FAILURES` times in a row makes
  the supervisor drain the others and exit non-zero, so Kubernetes restarts the pod.
- SIGTERM/SIGINT: every worker gets SIGTERM and drains as the single-process server does (in-flight calls
  finish within the grace period); the supervisor waits for them and returns (exit 0).
- A worker that cannot start (registry down, a bad flag) stops the others; its error is raised here, so
  `modelloop serve` reports it in one line and exits non-zero, as with one process.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from multiprocessing import connection
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from modelloop.contract.errors import UnavailableError
from modelloop.contract.port_file import Ports, write_port_file
from modelloop.contract.wire.admin import ModelStatus

from ..app import Challenger, LoadPlan, load_plan
from ..settings import ServeSettings
from .worker import portable_error, worker_main

log = logging.getLogger(__name__)

#: consecutive failed restarts of one worker before the supervisor gives up (exit non-zero)
MAX_RESTART_FAILURES = 5
#: seconds before the second restart attempt, doubling up to RESTART_BACKOFF_MOST
RESTART_BACKOFF_FIRST, RESTART_BACKOFF_MOST = 1.0, 30.0
#: how long past its grace period a draining worker may take before it is killed
DRAIN_SLACK = 5.0
#: how often start-up waits look at the workers (only while workers start)
POLL_SECONDS = 0.1
#: longest sleep of the supervising loop, which wakes when a worker exits or on a signal (a safety net only:
#: a 0.1 s poll cost ~1 ms of CPU a second)
SUPERVISE_SECONDS = 5.0


@dataclass
class _Worker:
    """The supervisor's side of one worker process and its pipe."""

    index: int
    process: BaseProcess
    conn: Connection
    ready: Future[list[ModelStatus]] = field(default_factory=Future)
    serving: threading.Event = field(default_factory=threading.Event)  # its health said SERVING once
    replies: dict[int, Future[Any]] = field(default_factory=dict)
    send_lock: threading.Lock = field(default_factory=threading.Lock)
    next_id: int = 0
    reader: threading.Thread | None = None

    def command(self, op: str, arg: Any) -> tuple[int, Future[Any]]:
        """Send a command; its key and the future its reply resolves."""
        with self.send_lock:
            self.next_id += 1
            key = self.next_id
            future: Future[Any] = Future()
            self.replies[key] = future
            try:
                self.conn.send((op, key, arg))
            except OSError:
                future.set_exception(UnavailableError(f"worker {self.index} is gone"))
        return key, future

    def send(self, message: tuple[Any, ...]) -> None:
        with self.send_lock:
            self.conn.send(message)

    def usable(self) -> bool:
        return self.process.is_alive() and self.ready.done() and self.ready.exception() is None


def reserve_port(host: str, port: int) -> socket.socket:
    """A socket bound to host:port with SO_REUSEPORT, never listening: holds the port the workers share."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UnavailableError(f"cannot bind {host}:{port}: {exc.strerror}") from None
    return sock


class Supervisor:
    """Runs `count` workers of `settings` (see the module docstring)."""

    def __init__(self, settings: ServeSettings, count: int) -> None:
        self.settings = settings
        self.count = count
        self.plan: LoadPlan = load_plan(settings)  # checked here: a bad --model fails before any worker
        self._ctx = multiprocessing.get_context("spawn")
        self._states = self._ctx.RawArray("i", count)
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()  # one admin operation or restart at a time
        self._stopping = threading.Event()
        self._gave_up: str | None = None
        self._restarting: set[int] = set()
        self._worker_settings = settings
        # the supervising loop's wake-up: written by the signal handler and by a restart or a give-up
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)

    # the whole life ---------------------------------------------------------------------------------------

    def run(self) -> None:
        """Start the workers, serve until SIGTERM/SIGINT, drain them. Raises what stopped a worker's start."""
        held = reserve_port(self.settings.host, self.settings.port)
        port = held.getsockname()[1]
        metrics_dir = tempfile.mkdtemp(prefix="modelloop-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir  # before any worker imports prometheus_client
        self._worker_settings = self.settings.model_copy(
            update={"port": port, "metrics_port": None, "port_file": None, "workers": 1}
        )
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        metrics_server = None
        try:
            metrics_server, metrics_port = self._metrics(metrics_dir)
            self._workers = [self._spawn(i, plan=None, late_bind=False) for i in range(self.count)]
            if self._wait_ready(self._workers) and self._wait_serving(self._workers):
                self.plan = _plan_of(self._workers[0].ready.result())
                if self.settings.port_file is not None:
                    write_port_file(self.settings.port_file, Ports(grpc=port, metrics=metrics_port))
                log.info("serving with %d workers on %s:%d (metrics port %s)", self.count,
                         self.settings.host, port, metrics_port)  # fmt: skip
                self._supervise()
        finally:
            self._drain()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if metrics_server is not None:
                metrics_server.shutdown()
            held.close()
            shutil.rmtree(metrics_dir, ignore_errors=True)
            wake_r, wake_w, self._wake_w = self._wake_r, self._wake_w, -1
            os.close(wake_r)
            os.close(wake_w)
        if self._gave_up is not None:
            raise UnavailableError(self._gave_up)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._stop()

    def _stop(self) -> None:
        self._stopping.set()
        self._wake()

    def _wake(self) -> None:
        """Wake the supervising loop (it waits on the workers' sentinels and this pipe)."""
        if self._wake_w < 0:
            return  # the run is over
        with contextlib.suppress(OSError):  # (the pipe is full: it is woken already)
            os.write(self._wake_w, b"!")

    def _broadcast_peers(self) -> None:
        """A worker's slot in the states array changed: every worker reads them again (health)."""
        for worker in list(self._workers):
            if worker.process.is_alive():
                with contextlib.suppress(OSError):  # it is exiting: the supervising loop sees that
                    worker.send(("peers",))

    def _metrics(self, metrics_dir: str) -> tuple[Any, int | None]:
        if self.settings.metrics_port is None:
            return None, None
        from prometheus_client import start_http_server

        from ..metrics import multiprocess_registry

        server, _ = start_http_server(
            self.settings.metrics_port, self.settings.host, registry=multiprocess_registry(metrics_dir)
        )
        return server, int(server.server_port)

    def _supervise(self) -> None:
        """Until SIGTERM: restart every worker that dies. Sleeps until a worker exits, a restart is done or
        a signal comes (`_wake`)."""
        while not self._stopping.is_set():
            watched = [w.process.sentinel for w in self._workers if w.index not in self._restarting]
            for ready in connection.wait([*watched, self._wake_r], timeout=SUPERVISE_SECONDS):
                if ready == self._wake_r:
                    os.read(self._wake_r, 512)
            for worker in list(self._workers):
                if worker.process.exitcode is None or worker.index in self._restarting:
                    continue
                log.warning("worker %d (pid %s) exited with code %s: restarting it", worker.index,
                            worker.process.pid, worker.process.exitcode)  # fmt: skip
                self._states[worker.index] = 0
                self._broadcast_peers()
                self._forget(worker)
                self._restarting.add(worker.index)
                threading.Thread(target=self._restart, args=(worker.index,), daemon=True).start()

    def _restart(self, index: int) -> None:
        """Start worker `index` again with the current plan, with backoff; give up after a few failures."""
        delay = RESTART_BACKOFF_FIRST
        for _ in range(MAX_RESTART_FAILURES):
            with self._lock:  # no swap meanwhile: the new worker loads what the others serve
                if self._stopping.is_set():
                    return
                worker = self._spawn(index, plan=self.plan, late_bind=True)
                self._workers[index] = worker
                try:
                    ready = self._wait_ready([worker])
                except Exception as exc:
                    log.warning("worker %d could not be restarted: %s", index, exc)
                    self._forget(worker)
                    ready = False
            if ready:
                self._restarting.discard(index)
                self._wake()  # the supervising loop watches the new process from now on
                log.info("worker %d restarted (pid %s)", index, worker.process.pid)
                return
            if self._stopping.wait(delay):
                return
            delay = min(delay * 2, RESTART_BACKOFF_MOST)
        self._gave_up = f"worker {index} could not be restarted {MAX_RESTART_FAILURES} times in a row"
        log.error("%s: stopping", self._gave_up)
        self._stop()

    def _drain(self) -> None:
        """SIGTERM to every worker; wait for each to drain (grace period), kill what outlives it."""
        self._stopping.set()
        for worker in self._workers:
            if worker.process.is_alive() and worker.process.pid is not None:
                os.kill(worker.process.pid, signal.SIGTERM)
        for worker in self._workers:
            worker.process.join(self.settings.grace_period + DRAIN_SLACK)
            if worker.process.is_alive():
                log.warning("worker %d outlived its grace period: killed", worker.index)
                worker.process.kill()
                worker.process.join(5)

    # workers ----------------------------------------------------------------------------------------------

    def _spawn(self, index: int, *, plan: LoadPlan | None, late_bind: bool) -> _Worker:
        ours, theirs = self._ctx.Pipe(duplex=True)
        process = self._ctx.Process(
            target=worker_main,
            args=(self._worker_settings, index, theirs),
            kwargs={"states": self._states, "plan": plan, "late_bind": late_bind},
            name=f"modelloop-worker-{index}",
        )
        process.start()
        theirs.close()
        worker = _Worker(index, process, ours)
        worker.reader = threading.Thread(target=self._receive, args=(worker,), daemon=True)
        worker.reader.start()
        return worker

    def _wait_ready(self, workers: list[_Worker]) -> bool:
        """True once every worker serves; False when stopping first; raises the error of one that failed."""
        while not all(w.ready.done() for w in workers):
            for w in workers:
                if not w.ready.done() and w.process.exitcode is not None and w.reader is not None:
                    w.reader.join(5)  # it reads what the worker sent before it exited
                    if not w.ready.done():
                        w.ready.set_exception(
                            UnavailableError(f"worker {w.index} exited with code {w.process.exitcode}")
                        )
            failed = next((w for w in workers if w.ready.done() and w.ready.exception()), None)
            if failed is not None:
                raise failed.ready.exception()  # type: ignore[misc]
            if self._stopping.wait(POLL_SECONDS):
                return False
        failed = next((w for w in workers if w.ready.exception()), None)
        if failed is not None:
            raise failed.ready.exception()  # type: ignore[misc]
        return True

    def _wait_serving(self, workers: list[_Worker]) -> bool:
        """True once every worker's health has said SERVING (so the port file, the readiness signal, never
        comes before health does); False when stopping first or a worker exits meanwhile."""
        while not all(w.serving.is_set() for w in workers):
            if any(w.process.exitcode is not None for w in workers) or self._stopping.wait(POLL_SECONDS):
                return False
        return True

    def _forget(self, worker: _Worker) -> None:
        """A dead worker: its live gauges leave the metrics."""
        from prometheus_client import multiprocess

        if worker.process.pid is not None:
            multiprocess.mark_process_dead(worker.process.pid)  # type: ignore[no-untyped-call]

    def _receive(self, worker: _Worker) -> None:
        """Reader thread of one worker's pipe."""
        while True:
            try:
                message = worker.conn.recv()
            except (EOFError, OSError):
                break
            kind = message[0]
            if kind == "ready" and not worker.ready.done():
                worker.ready.set_result(message[1])
                self._broadcast_peers()  # its slot is 1 now
            elif kind == "serving":
                worker.serving.set()
            elif kind == "failed" and not worker.ready.done():
                worker.ready.set_exception(message[1])
            elif kind == "reply":
                future = worker.replies.pop(message[1], None)
                if future is not None and not future.done():
                    future.set_result(message[3]) if message[2] else future.set_exception(message[3])
            elif kind == "admin":
                threading.Thread(target=self._admin, args=(worker, *message[1:]), daemon=True).start()
        gone = UnavailableError(f"worker {worker.index} exited")
        for future in list(worker.replies.values()):
            if not future.done():
                future.set_exception(gone)

    # admin calls ------------------------------------------------------------------------------------------

    def _admin(self, origin: _Worker, key: int, op: str, kwargs: dict[str, Any]) -> None:
        """Carry out an admin call that reached `origin` on every worker, then answer `origin`."""
        try:
            value = self.load(kwargs) if op == "load" else None
            if op == "unload":
                self.unload(kwargs)
        except Exception as exc:
            reply: tuple[Any, ...] = ("reply", key, False, portable_error(exc))
        else:
            reply = ("reply", key, True, value)
        try:
            origin.send(reply)
        except OSError:
            log.warning("worker %d left before its admin call was answered", origin.index)

    def load(self, kwargs: dict[str, Any]) -> ModelStatus:
        """Prepare on every worker, then commit on every worker (see the module docstring)."""
        with self._lock:
            workers = [w for w in self._workers if w.usable()]
            prepared = [(w, *w.command("prepare", kwargs)) for w in workers]
            errors = [_error(f) for _, _, f in prepared]
            if any(errors):
                for w, key, f in prepared:
                    if _error(f) is None:
                        w.command("abort", key)
                raise next(e for e in errors if e is not None)
            committed = [w.command("commit", key)[1] for w, key, _ in prepared]
            done: list[ModelStatus] = [f.result() for f in committed if _error(f) is None]
            if not done:  # (only a worker that died meanwhile can fail a commit)
                raise next(e for e in map(_error, committed) if e is not None)
            # a worker that died between prepare and commit is restarted with the new plan: every worker
            # that serves, serves the new version
            self.plan = _apply(self.plan, done[0], unload=None)
            return done[0]

    def unload(self, kwargs: dict[str, Any]) -> None:
        with self._lock:
            done = [w.command("unload", kwargs)[1] for w in self._workers if w.usable()]
            for f in done:
                f.result()
            self.plan = _apply(self.plan, None, unload=(kwargs["name"], kwargs["role"]))


def _error(future: Future[Any]) -> BaseException | None:
    return future.exception()


def _plan_of(statuses: list[ModelStatus]) -> LoadPlan:
    """What the workers serve, versions pinned (an alias that moves later does not split the workers)."""
    refs = [(s.name, s.champion_version) for s in statuses]
    challengers = [
        Challenger(s.name, s.challenger_version, s.mode or "shadow", s.canary_share)
        for s in statuses
        if s.challenger_version is not None
    ]
    return LoadPlan(refs, challengers)


def _apply(plan: LoadPlan, status: ModelStatus | None, *, unload: tuple[str, str] | None) -> LoadPlan:
    """The plan after a load (the model's new status) or an unload (name, role)."""
    if unload is not None:
        name, role = unload
        refs = [r for r in plan.refs if r[0] != name] if role == "champion" else plan.refs
        return LoadPlan(refs, [c for c in plan.challengers if c.name != name])
    assert status is not None
    others = [s for s in _statuses_of(plan) if s.name != status.name]
    return _plan_of([*others, status])


def _statuses_of(plan: LoadPlan) -> list[ModelStatus]:
    challengers = {c.name: c for c in plan.challengers}
    out = []
    for name, version in plan.refs:
        c = challengers.get(name)
        out.append(ModelStatus(name, version, c.ref if c else None, c.mode if c else None,
                               c.share if c else 0.0, True))  # fmt: skip
    return out


__all__ = ["MAX_RESTART_FAILURES", "Supervisor", "reserve_port"]
