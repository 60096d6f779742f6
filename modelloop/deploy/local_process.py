"""The local target's process supervision: start a `modelloop serve` subprocess and wait until it serves,
stop it (SIGTERM to its process group, SIGKILL after the grace), and restart one that exits on its own.

Used by `deploy.local.LocalTarget` only, which decides what runs (the command line, the client) and holds
`ServerProcess.lock` around every `start` and `terminate`. A server is ready when its port file
(`contract.port_file`) exists and it answers ready for every binding's model. A dead server is restarted on
the same port with the specs it last served, with exponential backoff between attempts (`restart_backoff`,
doubling to `max_backoff`; forgotten once a server has stayed up that long). The watching thread skips a
server whose lock is held (a rollout in progress).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from modelloop.contract.errors import ModelloopError
from modelloop.contract.port_file import read_port_file

from .local_swap import AdminClient, swap_challenger
from .target import DeploymentSpec

log = logging.getLogger(__name__)

#: seconds a restarted server has to get ready
RESTART_DEADLINE = 120.0


@dataclass
class ServerProcess:
    """One scoring-server process and the bindings it serves (one, unless shared)."""

    key: str
    specs: dict[str, DeploymentSpec]  # binding name -> what it serves
    port: int
    port_file: Path
    log_file: Path
    proc: subprocess.Popen[bytes] | None = None
    client: AdminClient | None = None
    restarts: int = 0
    next_restart: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def close_client(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None


class Supervisor:
    """Starts, stops and restarts `ServerProcess`es (see the module docstring). Watches from a daemon thread
    started here, every `every` seconds, the servers `servers()` returns, until `close()`."""

    def __init__(
        self,
        *,
        command: Callable[[ServerProcess], list[str]],
        connect: Callable[[ServerProcess], AdminClient],
        servers: Callable[[], list[ServerProcess]],
        extra_env: Mapping[str, str],
        max_backoff: float,
        restart_backoff: float,
        every: float,
        stop_grace: float,
    ) -> None:
        self._command = command
        self._connect = connect
        self._servers = servers
        self._extra_env = dict(extra_env)
        self.max_backoff = max_backoff
        self.restart_backoff = restart_backoff
        self.stop_grace = stop_grace
        self._every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="local-target-supervisor", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop watching (and end any `start` still waiting); the processes are the caller's to terminate."""
        self._stop.set()
        self._thread.join(timeout=5)

    def start(self, server: ServerProcess, *, deadline: float) -> str | None:
        """Start the process and wait for it to serve every binding; None on success, else why not."""
        server.port_file.unlink(missing_ok=True)
        with open(server.log_file, "ab") as out:
            server.proc = subprocess.Popen(
                self._command(server),
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self._extra_env},  # the child inherits this environment
                start_new_session=True,
            )
        end = time.monotonic() + deadline
        while time.monotonic() < end and not self._stop.is_set():
            code = server.proc.poll()
            if code is not None:
                return f"scoring server exited with code {code} (log: {server.log_file})"
            if read_port_file(server.port_file) is not None and self._answers(server):
                return self._after_start(server, end)
            time.sleep(0.1)
        if self._stop.is_set():
            return "the local target is closing"
        return f"scoring server not ready within {deadline:.0f}s (log: {server.log_file})"

    def _answers(self, server: ServerProcess) -> bool:
        """Whether the server answers ready for every binding's model."""
        if server.client is None:
            server.client = self._connect(server)
        try:
            return all(server.client.ready(s.model) for s in server.specs.values())
        except ModelloopError:
            return False

    @staticmethod
    def _after_start(server: ServerProcess, end: float) -> str | None:
        """Load the challengers the command line could not carry (a shared server with several bindings)."""
        assert server.client is not None
        if len(server.specs) > 1:
            for spec in server.specs.values():
                if spec.challenger_version is None:
                    continue
                try:
                    swap_challenger(server.client, None, spec, max(1.0, end - time.monotonic()))
                except ModelloopError as exc:
                    return f"challenger {spec.model}/{spec.challenger_version}: {exc}"
        for spec in server.specs.values():
            log.info("binding %s: serving %s/%s on port %d", spec.name, spec.model, spec.champion_version,
                     server.port)  # fmt: skip
        return None

    def terminate(self, server: ServerProcess) -> None:
        """Close the client and stop the process: SIGTERM to its group, SIGKILL after `stop_grace`."""
        proc, server.proc = server.proc, None
        server.close_client()
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=self.stop_grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        except ProcessLookupError:
            pass

    def _watch(self) -> None:
        while not self._stop.wait(self._every):
            for server in self._servers():
                if not server.lock.acquire(blocking=False):
                    continue  # a rollout is in progress
                try:
                    self._restart_if_dead(server)
                finally:
                    server.lock.release()

    def _restart_if_dead(self, server: ServerProcess) -> None:
        if server.alive:
            if server.restarts and time.monotonic() > server.next_restart + self.max_backoff:
                server.restarts = 0  # it stayed up: forget past crashes
            return
        now = time.monotonic()
        if now < server.next_restart:
            return
        code = server.proc.returncode if server.proc is not None else None
        server.restarts += 1
        backoff = min(self.max_backoff, self.restart_backoff * 2.0 ** (server.restarts - 1))
        server.next_restart = now + backoff
        log.warning("server %s (%s): scoring server exited (code %s); restart %d", server.key,
                    ", ".join(server.specs), code, server.restarts)  # fmt: skip
        server.close_client()
        failure = self.start(server, deadline=RESTART_DEADLINE)
        if failure:
            log.error("server %s: restart failed: %s; next try in %.0fs", server.key, failure, backoff)
            self.terminate(server)


__all__ = ["RESTART_DEADLINE", "ServerProcess", "Supervisor"]
