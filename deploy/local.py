"""The `local` deployment target: one supervised `modelloop serve` subprocess per binding on this machine.

Used by `modelloop controller` and the local platform (`modelloop up`). A binding's server keeps one gRPC port
for its whole life (`address(name)`), across promotions and restarts. A promotion is applied by hot swap
through `serving.client.ScoringClient.load_model` (the new version loads and warms beside the old one, then
takes over; no call fails); if it cannot load, the old version keeps serving and `RolloutFailedError` is
raised. A server that exits on its own is restarted on the same port with the versions it last served, with
exponential backoff between attempts (`restart_backoff`, 1 s, doubling to `max_backoff`; forgotten once a
server has stayed up that long). The scoring server is used only through its command and
its client.
"""

from __future__ import annotations

import builtins
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelloop.errors import ModelloopError, UnavailableError

from .errors import RolloutFailedError, TemporaryError
from .mlflow_server import free_port
from .target import DeploymentSpec, DeploymentState, DeploymentTarget

log = logging.getLogger(__name__)


def read_port_file(path: Path) -> int | None:
    """The gRPC port from a port file: a bare number or JSON `{"grpc": p, "metrics": m}`."""
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if not text:
        return None
    try:
        value: Any = json.loads(text)
    except ValueError:
        return None
    if isinstance(value, dict):
        value = value.get("grpc")
    return int(value) if isinstance(value, int) else None


@dataclass
class _Server:
    spec: DeploymentSpec
    port: int
    port_file: Path
    log_file: Path
    proc: subprocess.Popen[bytes] | None = None
    client: Any = None
    restarts: int = 0
    next_restart: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)


class LocalTarget(DeploymentTarget):
    """Subprocess scoring servers (see the module docstring). Thread safe."""

    def __init__(
        self,
        *,
        tracking_uri: str,
        work_dir: Path,
        prediction_log_url: str | None = None,
        token_file: Path | None = None,
        host: str = "127.0.0.1",
        extra_env: Mapping[str, str] | None = None,
        max_backoff: float = 30.0,
        restart_backoff: float = 1.0,
        supervise_every: float = 1.0,
        stop_grace: float = 30.0,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.work_dir = Path(work_dir)
        self.prediction_log_url = prediction_log_url
        self.token_file = token_file
        self.host = host
        self.extra_env = {"OMP_NUM_THREADS": "1", **(extra_env or {})}
        self.max_backoff = max_backoff
        self.restart_backoff = restart_backoff
        self.stop_grace = stop_grace
        self._servers: dict[str, _Server] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._supervise_every = supervise_every
        self._supervisor = threading.Thread(
            target=self._supervise, name="local-target-supervisor", daemon=True
        )
        self._supervisor.start()

    # the port ---------------------------------------------------------------------------------------------

    def address(self, name: str) -> str:
        """host:port of a binding's gRPC server."""
        with self._lock:
            server = self._servers.get(name)
        if server is None:
            raise KeyError(name)
        return f"{self.host}:{server.port}"

    def pid(self, name: str) -> int | None:
        """Process id of a binding's scoring server (None while it is down or being restarted)."""
        with self._lock:
            server = self._servers.get(name)
        if server is None:
            raise KeyError(name)
        proc = server.proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def restarts(self, name: str) -> int:
        """Restarts of a binding's server since it last stayed up for `max_backoff` seconds."""
        with self._lock:
            server = self._servers.get(name)
        if server is None:
            raise KeyError(name)
        return server.restarts

    def create(self, spec: DeploymentSpec, *, deadline: float) -> DeploymentState:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        server = _Server(
            spec=spec,
            port=free_port(self.host),
            port_file=self.work_dir / f"{spec.name}.port",
            log_file=self.work_dir / f"{spec.name}.log",
        )
        with server.lock:
            failure = self._start(server, deadline=deadline)
            if failure:
                self._terminate(server)
                raise RolloutFailedError(f"{spec.model}/{spec.champion_version}: {failure}")
            with self._lock:
                self._servers[spec.name] = server
        return self._state(server)

    def update(self, spec: DeploymentSpec, *, deadline: float) -> DeploymentState:
        with self._lock:
            server = self._servers.get(spec.name)
        if server is None:
            raise RolloutFailedError(f"binding {spec.name} is not deployed")
        with server.lock:
            if server.proc is None or server.proc.poll() is not None:
                raise TemporaryError(f"binding {spec.name}: server restarting", delay=2.0)
            old = server.spec
            try:
                self._swap(server, old, spec, deadline)
            except UnavailableError as exc:
                if server.proc.poll() is not None:
                    raise TemporaryError(f"binding {spec.name}: server went away", delay=2.0) from None
                raise RolloutFailedError(f"{spec.model}/{spec.champion_version}: {exc}") from None
            except ModelloopError as exc:
                raise RolloutFailedError(f"{spec.model}/{spec.champion_version}: {exc}") from None
            server.spec = spec
        return self._state(server)

    def _swap(self, server: _Server, old: DeploymentSpec, new: DeploymentSpec, deadline: float) -> None:
        client = server.client
        if new.champion_version != old.champion_version or new.model != old.model:
            client.load_model(new.model, new.champion_version, role="champion", timeout=deadline)
        if new.challenger_version is not None:
            if (new.challenger_version, new.mode, new.canary_share) != (
                old.challenger_version,
                old.mode,
                old.canary_share,
            ):
                client.load_model(
                    new.model,
                    new.challenger_version,
                    role="challenger",
                    mode=new.mode,
                    canary_share=new.canary_share,
                    timeout=deadline,
                )
        elif old.challenger_version is not None:
            client.unload_model(new.model, role="challenger")

    def delete(self, name: str) -> None:
        with self._lock:
            server = self._servers.pop(name, None)
        if server is not None:
            with server.lock:
                self._terminate(server)

    def get(self, name: str) -> DeploymentState | None:
        with self._lock:
            server = self._servers.get(name)
        return None if server is None else self._state(server)

    def list(self) -> list[DeploymentState]:
        with self._lock:
            servers = list(self._servers.values())
        return [self._state(s) for s in servers]

    def close(self) -> None:
        self._stop.set()
        self._supervisor.join(timeout=5)
        with self._lock:
            servers = list(self._servers.values())
            self._servers.clear()
        for server in servers:
            with server.lock:
                self._terminate(server)

    # processes --------------------------------------------------------------------------------------------

    def _state(self, server: _Server) -> DeploymentState:
        """The versions the server was last told to serve. A crashed server counts as ready: the supervisor
        restarts it with these versions, and the reconciler must not fight it."""
        spec = server.spec
        return DeploymentState(
            name=spec.name,
            model=spec.model,
            champion_version=spec.champion_version,
            challenger_version=spec.challenger_version,
            mode=spec.mode,
            ready=True,
        )

    def command(self, server: _Server) -> builtins.list[str]:
        spec = server.spec
        cmd = [sys.executable, "-m", "modelloop", "serve", "--model", f"{spec.model}/{spec.champion_version}"]
        if spec.challenger_version is not None and spec.mode is not None:
            cmd += ["--challenger", f"{spec.model}/{spec.challenger_version}", "--challenger-mode", spec.mode]
            if spec.canary_share is not None:
                cmd += ["--canary-share", str(spec.canary_share)]
        cmd += [
            "--host", self.host,
            "--port", str(server.port),
            "--port-file", str(server.port_file),
            "--metrics-port", "0",
            "--tracking-uri", self.tracking_uri,
            "--prediction-log-url", self.prediction_log_url or "none",
        ]  # fmt: skip
        if self.token_file is not None:
            cmd += ["--token-file", str(self.token_file)]
        return cmd

    def _start(self, server: _Server, *, deadline: float) -> str | None:
        """Start the process and wait for it to be ready; None on success, else why not."""
        from serving.client import ScoringClient  # type: ignore[import-not-found, unused-ignore]  # lands with serving

        server.port_file.unlink(missing_ok=True)
        with open(server.log_file, "ab") as out:
            server.proc = subprocess.Popen(
                self.command(server),
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.extra_env},
                start_new_session=True,
            )
        end = time.monotonic() + deadline
        while time.monotonic() < end and not self._stop.is_set():
            code = server.proc.poll()
            if code is not None:
                return f"scoring server exited with code {code} (log: {server.log_file})"
            if read_port_file(server.port_file) is not None:
                if server.client is None:
                    server.client = ScoringClient(f"{self.host}:{server.port}", token=self._token())
                try:
                    if server.client.ready(server.spec.model):
                        log.info("binding %s: serving %s/%s on port %d", server.spec.name,
                                 server.spec.model, server.spec.champion_version, server.port)  # fmt: skip
                        return None
                except ModelloopError:
                    pass
            time.sleep(0.1)
        return f"scoring server not ready within {deadline:.0f}s (log: {server.log_file})"

    def _token(self) -> str | None:
        if self.token_file is None:
            return None
        return self.token_file.read_text().strip()

    def _terminate(self, server: _Server) -> None:
        proc, server.proc = server.proc, None
        if server.client is not None:
            server.client.close()
            server.client = None
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

    def _supervise(self) -> None:
        while not self._stop.wait(self._supervise_every):
            with self._lock:
                servers = list(self._servers.values())
            for server in servers:
                if not server.lock.acquire(blocking=False):
                    continue  # a rollout is in progress
                try:
                    self._restart_if_dead(server)
                finally:
                    server.lock.release()

    def _restart_if_dead(self, server: _Server) -> None:
        if server.proc is not None and server.proc.poll() is None:
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
        log.warning("binding %s: scoring server exited (code %s); restart %d", server.spec.name, code,
                    server.restarts)  # fmt: skip
        if server.client is not None:
            server.client.close()
            server.client = None
        failure = self._start(server, deadline=120.0)
        if failure:
            log.error("binding %s: restart failed: %s; next try in %.0fs", server.spec.name, failure, backoff)
            self._terminate(server)


__all__ = ["LocalTarget", "read_port_file"]
