"""One worker process of `modelloop serve --workers N`: `serving.app.run` with a `WorkerLink` to the
supervisor (`serving.workers.supervisor`). Started by the supervisor (multiprocessing, spawn), never directly.

The link is a duplex pipe. What the worker sends: `("ready", statuses)` once it serves, `("failed", error)`
when it cannot start, `("admin", id, op, kwargs)` when an admin call (hot swap) reached it, `("reply", id,
ok, value)` to a command. What the supervisor sends: `("reply", id, ok, value)` to an admin call, `("peers",)`
when a worker's slot in `states` changed, and the commands `("prepare", id, kwargs)` (load and warm, switch
nothing), `("commit", id, prepare_id)`, `("abort", id, prepare_id)` and `("unload", id, kwargs)`. A reader
thread receives; commands run on the event loop.

Health: the worker sets its slot in the shared `states` array to 1 once it serves; when it starts and on
every `("peers",)` it tells its server whether every slot is 1 (health SERVING only then). Nothing polls: an
idle worker costs no CPU (a 0.1 s poll of the slots cost ~1.6 ms of CPU a second per worker).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import pickle
import sys
import threading
from collections.abc import MutableSequence
from multiprocessing.connection import Connection
from typing import Any

from modelloop.contract.errors import ModelloopError, UnavailableError
from modelloop.contract.registry import Role
from modelloop.contract.wire.admin import ModelStatus

from ..app import LoadPlan, run
from ..grpc_server import ScoringServer
from ..hosting import ModelHost, PendingLoad
from ..settings import ServeSettings

log = logging.getLogger(__name__)


def portable_error(exc: BaseException) -> BaseException:
    """`exc` if it survives pickling (to cross the pipe), else a ModelloopError with its message."""
    try:
        pickle.loads(pickle.dumps(exc))  # noqa: S301 (our own object, round-tripped)
    except Exception:
        return ModelloopError(str(exc) or type(exc).__name__)
    return exc


class WorkerAdmin:
    """The admin service's loads and unloads in a worker: carried out by the supervisor on every worker."""

    def __init__(self, link: WorkerLink) -> None:
        self._link = link

    async def load(
        self,
        name: str,
        version: str,
        *,
        role: Role = Role.CHAMPION,
        mode: str | None = None,
        canary_share: float | None = None,
    ) -> ModelStatus:
        kwargs = {
            "name": name,
            "version": version,
            "role": str(role),
            "mode": mode,
            "canary_share": canary_share,
        }
        status: ModelStatus = await self._link.ask("load", kwargs)
        return status

    async def unload(self, name: str, *, role: Role = Role.CHAMPION) -> None:
        await self._link.ask("unload", {"name": name, "role": str(role)})


class WorkerLink:
    """The worker's side of its pipe to the supervisor (see the module docstring): `app.Supervised`."""

    def __init__(
        self,
        conn: Connection,
        index: int,
        states: MutableSequence[int],
        *,
        plan: LoadPlan | None = None,
        late_bind: bool = False,
    ) -> None:
        self.admin = WorkerAdmin(self)
        self.plan = plan
        self.late_bind = late_bind
        self._conn = conn
        self._index = index
        self._states = states
        self._send_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._pending: dict[int, PendingLoad] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._host: ModelHost | None = None
        self._server: ScoringServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._peers_lock = asyncio.Lock()  # one health update at a time: the last one reads the last states
        self._told_serving = False

    def send(self, message: tuple[Any, ...]) -> None:
        with self._send_lock:
            self._conn.send(message)

    def attach(self, host: ModelHost, server: ScoringServer) -> None:
        self._loop = asyncio.get_running_loop()
        self._host, self._server = host, server
        threading.Thread(target=self._receive, name="worker-link", daemon=True).start()

    def started(self, port: int, metrics_port: int | None) -> None:
        assert self._host is not None and self._loop is not None
        self._states[self._index] = 1
        self.send(("ready", self._host.list()))
        task = self._loop.create_task(self._check_peers())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def ask(self, op: str, kwargs: dict[str, Any]) -> Any:
        """Have the supervisor carry out an admin `op` on every worker; its answer, or its error raised."""
        assert self._loop is not None
        key = next(self._ids)
        future: asyncio.Future[Any] = self._loop.create_future()
        self._waiting[key] = future
        try:
            self.send(("admin", key, op, kwargs))
            return await future
        finally:
            self._waiting.pop(key, None)

    async def _check_peers(self) -> None:
        """Tell the server whether every worker serves (at start, and whenever the supervisor says a slot
        changed: every change is followed by such a message, so the last check reads the last states)."""
        assert self._server is not None
        async with self._peers_lock:
            ready = all(self._states)
            await self._server.set_peers_ready(ready)
            if ready and not self._told_serving:  # the supervisor writes the port file once all said this
                self.send(("serving",))
                self._told_serving = True

    def _receive(self) -> None:
        """The reader thread: answers to our admin calls, and the supervisor's commands (run on the loop)."""
        assert self._loop is not None
        loop = self._loop
        while True:
            try:
                message = self._conn.recv()
            except (EOFError, OSError):
                loop.call_soon_threadsafe(self._supervisor_gone)
                return
            if message[0] == "reply":
                loop.call_soon_threadsafe(self._answer, *message[1:])
            elif message[0] == "peers":
                if self._server is not None and self._states[self._index]:  # (not before it serves)
                    asyncio.run_coroutine_threadsafe(self._check_peers(), loop)
            else:
                asyncio.run_coroutine_threadsafe(self._command(*message), loop)

    def _answer(self, key: int, ok: bool, value: Any) -> None:
        future = self._waiting.get(key)
        if future is not None and not future.done():
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)

    def _supervisor_gone(self) -> None:
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(UnavailableError("the workers' supervisor is gone"))

    async def _command(self, op: str, key: int, arg: Any) -> None:
        try:
            value = await self._carry_out(op, key, arg)
        except Exception as exc:
            self.send(("reply", key, False, portable_error(exc)))
        else:
            self.send(("reply", key, True, value))

    async def _carry_out(self, op: str, key: int, arg: Any) -> Any:
        assert self._host is not None and self._server is not None
        if op == "prepare":
            self._pending[key] = await self._host.prepare(
                arg["name"], arg["version"], role=Role(arg["role"]), mode=arg["mode"],
                canary_share=arg["canary_share"],
            )  # fmt: skip
            return None
        if op == "commit":
            status = await self._host.commit(self._pending.pop(arg))
            await self._server.mark(status.name, serving=True)
            return status
        if op == "abort":
            self._pending.pop(arg, None)
            return None
        if op == "unload":
            role = Role(arg["role"])
            await self._host.unload(arg["name"], role=role)
            if role == Role.CHAMPION:
                await self._server.mark(arg["name"], serving=False)
            return None
        raise ModelloopError(f"unknown worker command {op}")


def worker_main(
    settings: ServeSettings,
    index: int,
    conn: Connection,
    *,
    states: MutableSequence[int],
    plan: LoadPlan | None,
    late_bind: bool,
) -> None:
    """The worker process: serve until SIGTERM (drain), then leave at once (see `modelloop.cli.serve`)."""
    from modelloop.contract.logs import configure_logging

    configure_logging(settings.log_level, settings.log_format)
    link = WorkerLink(conn, index, states, plan=plan, late_bind=late_bind)
    code = 0
    try:
        asyncio.run(run(settings, link=link))
    except BaseException as exc:  # the supervisor reports it (one line) and stops the others
        code = 1
        try:
            link.send(("failed", portable_error(exc)))
        except OSError:
            log.exception("worker %d failed", index)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # without waiting for loads the drain abandoned


__all__ = ["WorkerAdmin", "WorkerLink", "portable_error", "worker_main"]
