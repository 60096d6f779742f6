"""The `local` deployment target: supervised `modelloop serve` subprocesses on this machine, one per binding
or (with `shared=True`) one for every binding, each binding's model hosted beside the others.

Used by `modelloop controller` and the local platform (`modelloop up`). A server keeps one gRPC port for its
whole life (`address(name)`), across promotions and restarts. In a shared server a binding is added by
loading its model into the running process and removed by unloading it; two bindings of one model cannot
share a server (the second is refused). A promotion is applied by hot swap
through `serving.client.ScoringClient.load_model` (the new version loads and warms beside the old one, then
takes over; no call fails); if it cannot load, the old version keeps serving and `RolloutFailedError` is
raised. A server that exits on its own is restarted on the same port with the versions it last served, with
exponential backoff between attempts (`restart_backoff`, 1 s, doubling to `max_backoff`; forgotten once a
server has stayed up that long). The scoring server is used only through its command and
its client. Hot swap goes through the scoring server's admin service, which a server runs only when started
with an admin credential: the target makes one (`admin_token`, a file only this user can read) and hands it
to the servers it starts and to its own client, nobody else.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelloop.contract.errors import ModelloopError, UnavailableError

from .errors import PermanentError, RolloutFailedError, TemporaryError
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
    """One scoring-server process and the bindings it serves (one, unless shared)."""

    key: str
    specs: dict[str, DeploymentSpec]  # binding name -> what it serves
    port: int
    port_file: Path
    log_file: Path
    proc: subprocess.Popen[bytes] | None = None
    client: Any = None
    restarts: int = 0
    next_restart: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


SHARED_KEY = "shared"


class LocalTarget(DeploymentTarget):
    """Subprocess scoring servers (see the module docstring). Thread safe."""

    def __init__(
        self,
        *,
        tracking_uri: str,
        work_dir: Path,
        shared: bool = False,
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
        self.shared = shared
        self.prediction_log_url = prediction_log_url
        self.token_file = token_file
        # the admin service (hot swap) is the controller's alone: a credential made here, handed only to the
        # servers this target starts (a file only this user can read) and to its own client
        self.admin_token = secrets.token_urlsafe(32)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.admin_token_file = self.work_dir / "admin-token"
        self.admin_token_file.touch(mode=0o600)
        self.admin_token_file.chmod(0o600)
        self.admin_token_file.write_text(self.admin_token)
        self.host = host
        self.extra_env = {"OMP_NUM_THREADS": "1", **(extra_env or {})}
        self.max_backoff = max_backoff
        self.restart_backoff = restart_backoff
        self.stop_grace = stop_grace
        self._servers: dict[str, _Server] = {}  # key (binding name, or SHARED_KEY) -> server
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._supervise_every = supervise_every
        self._supervisor = threading.Thread(
            target=self._supervise, name="local-target-supervisor", daemon=True
        )
        self._supervisor.start()

    # the port ---------------------------------------------------------------------------------------------

    def _key(self, name: str) -> str:
        return SHARED_KEY if self.shared else name

    def _server_of(self, name: str) -> _Server | None:
        """The server a binding is deployed on, or None."""
        with self._lock:
            server = self._servers.get(self._key(name))
        return server if server is not None and name in server.specs else None

    def _known(self, name: str) -> _Server:
        server = self._server_of(name)
        if server is None:
            raise KeyError(name)
        return server

    def address(self, name: str) -> str:
        """host:port of a binding's gRPC server."""
        return f"{self.host}:{self._known(name).port}"

    def port_file(self, name: str) -> Path:
        """The port file of a binding's server (its gRPC and metrics ports once it is up)."""
        return self._known(name).port_file

    def pid(self, name: str) -> int | None:
        """Process id of a binding's scoring server (None while it is down or being restarted)."""
        proc = self._known(name).proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def restarts(self, name: str) -> int:
        """Restarts of a binding's server since it last stayed up for `max_backoff` seconds."""
        return self._known(name).restarts

    def create(self, spec: DeploymentSpec, *, deadline: float) -> DeploymentState:
        key = self._key(spec.name)
        with self._lock:
            server = self._servers.get(key)
        if server is not None:  # a shared server that runs already: add the binding's model to it
            return self._join(server, spec, deadline)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        server = _Server(
            key=key,
            specs={spec.name: spec},
            port=free_port(self.host),
            port_file=self.work_dir / f"{key}.port",
            log_file=self.work_dir / f"{key}.log",
        )
        with server.lock:
            failure = self._start(server, deadline=deadline)
            if failure:
                self._terminate(server)
                raise RolloutFailedError(f"{spec.model}/{spec.champion_version}: {failure}")
            with self._lock:
                self._servers[key] = server
        return self._state(spec)

    def _join(self, server: _Server, spec: DeploymentSpec, deadline: float) -> DeploymentState:
        with server.lock:
            taken = [n for n, s in server.specs.items() if s.model == spec.model and n != spec.name]
            if taken:
                raise PermanentError(
                    f"binding {spec.name}: model {spec.model} is served by binding {taken[0]} in the shared "
                    "server already"
                )
            if not server.alive:
                raise TemporaryError(f"binding {spec.name}: shared server restarting", delay=2.0)
            try:
                self._swap(server, None, spec, deadline)
            except ModelloopError as exc:
                self._unload_quietly(server, spec.model)
                raise self._rollout_error(server, spec, exc) from None
            server.specs[spec.name] = spec
        return self._state(spec)

    def update(self, spec: DeploymentSpec, *, deadline: float) -> DeploymentState:
        server = self._server_of(spec.name)
        if server is None:
            raise RolloutFailedError(f"binding {spec.name} is not deployed")
        with server.lock:
            if not server.alive:
                raise TemporaryError(f"binding {spec.name}: server restarting", delay=2.0)
            old = server.specs[spec.name]
            try:
                self._swap(server, old, spec, deadline)
            except ModelloopError as exc:
                raise self._rollout_error(server, spec, exc) from None
            server.specs[spec.name] = spec
        return self._state(spec)

    def _rollout_error(self, server: _Server, spec: DeploymentSpec, exc: ModelloopError) -> ModelloopError:
        if isinstance(exc, UnavailableError) and not server.alive:
            return TemporaryError(f"binding {spec.name}: server went away", delay=2.0)
        return RolloutFailedError(f"{spec.model}/{spec.champion_version}: {exc}")

    def _swap(
        self, server: _Server, old: DeploymentSpec | None, new: DeploymentSpec, deadline: float
    ) -> None:
        """Hot-swap `old` to `new` in a running server; on failure what served before still serves."""
        client = server.client
        champion_changed = old is None or new.champion_version != old.champion_version
        if champion_changed:
            client.load_model(new.model, new.champion_version, role="champion", timeout=deadline)
        try:
            self._swap_challenger(client, old, new, deadline)
        except ModelloopError:
            if champion_changed and old is not None:  # put the champion back too
                client.load_model(old.model, old.champion_version, role="champion", timeout=deadline)
            raise

    def _swap_challenger(
        self, client: Any, old: DeploymentSpec | None, new: DeploymentSpec, deadline: float
    ) -> None:
        before = (None, None, None) if old is None else (old.challenger_version, old.mode, old.canary_share)
        if new.challenger_version is not None:
            if (new.challenger_version, new.mode, new.canary_share) != before:
                client.load_model(
                    new.model,
                    new.challenger_version,
                    role="challenger",
                    mode=new.mode,
                    canary_share=new.canary_share,
                    timeout=deadline,
                )
        elif before[0] is not None:
            client.unload_model(new.model, role="challenger")

    def _unload_quietly(self, server: _Server, model: str) -> None:
        """Take a model a failed join may have half-loaded back out of a shared server."""
        for role in ("challenger", "champion"):
            with contextlib.suppress(ModelloopError):
                server.client.unload_model(model, role=role)

    def delete(self, name: str) -> None:
        server = self._server_of(name)
        if server is None:
            return
        with server.lock:
            spec = server.specs.pop(name, None)
            if not server.specs:
                with self._lock:
                    self._servers.pop(server.key, None)
                self._terminate(server)
            elif spec is not None and server.alive:
                self._unload_quietly(server, spec.model)

    def get(self, name: str) -> DeploymentState | None:
        server = self._server_of(name)
        spec = None if server is None else server.specs.get(name)
        return None if spec is None else self._state(spec)

    def list(self) -> builtins.list[DeploymentState]:
        with self._lock:
            servers = builtins.list(self._servers.values())
        return [self._state(spec) for s in servers for spec in builtins.list(s.specs.values())]

    def close(self) -> None:
        self._stop.set()
        self._supervisor.join(timeout=5)
        with self._lock:
            servers = builtins.list(self._servers.values())
            self._servers.clear()
        for server in servers:
            with server.lock:
                self._terminate(server)

    # processes --------------------------------------------------------------------------------------------

    def _state(self, spec: DeploymentSpec) -> DeploymentState:
        """The versions a binding's server was last told to serve. A crashed server counts as ready: the
        supervisor restarts it with these versions, and the reconciler must not fight it."""
        return DeploymentState(
            name=spec.name,
            model=spec.model,
            champion_version=spec.champion_version,
            challenger_version=spec.challenger_version,
            mode=spec.mode,
            ready=True,
        )

    def command(self, server: _Server) -> builtins.list[str]:
        """The `modelloop serve` command line: every binding's champion; the challenger only when the server
        has one binding (the command takes one; `_start` loads the others' challengers once it answers)."""
        specs = builtins.list(server.specs.values())
        cmd = [sys.executable, "-m", "modelloop", "serve"]
        for spec in specs:
            cmd += ["--model", f"{spec.model}/{spec.champion_version}"]
        only = specs[0] if len(specs) == 1 else None
        if only is not None and only.challenger_version is not None and only.mode is not None:
            cmd += ["--challenger", f"{only.model}/{only.challenger_version}", "--challenger-mode", only.mode]
            if only.canary_share is not None:
                cmd += ["--canary-share", str(only.canary_share)]
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
        cmd += ["--admin-token-file", str(self.admin_token_file)]
        return cmd

    def _start(self, server: _Server, *, deadline: float) -> str | None:
        """Start the process and wait for it to serve every binding; None on success, else why not."""
        from modelloop.serving.client import ScoringClient  # type: ignore[import-not-found, unused-ignore]  # lands with serving

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
                    server.client = ScoringClient(
                        f"{self.host}:{server.port}", token=self._token(), admin_token=self.admin_token
                    )
                try:
                    if all(server.client.ready(s.model) for s in server.specs.values()):
                        return self._after_start(server, end)
                except ModelloopError:
                    pass
            time.sleep(0.1)
        if self._stop.is_set():
            return "the local target is closing"
        return f"scoring server not ready within {deadline:.0f}s (log: {server.log_file})"

    def _after_start(self, server: _Server, end: float) -> str | None:
        """Load the challengers the command line could not carry (a shared server with several bindings)."""
        if len(server.specs) > 1:
            for spec in server.specs.values():
                if spec.challenger_version is None:
                    continue
                try:
                    self._swap_challenger(server.client, None, spec, max(1.0, end - time.monotonic()))
                except ModelloopError as exc:
                    return f"challenger {spec.model}/{spec.challenger_version}: {exc}"
        for spec in server.specs.values():
            log.info("binding %s: serving %s/%s on port %d", spec.name, spec.model, spec.champion_version,
                     server.port)  # fmt: skip
        return None

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
        log.warning("server %s (%s): scoring server exited (code %s); restart %d", server.key,
                    ", ".join(server.specs), code, server.restarts)  # fmt: skip
        if server.client is not None:
            server.client.close()
            server.client = None
        failure = self._start(server, deadline=120.0)
        if failure:
            log.error("server %s: restart failed: %s; next try in %.0fs", server.key, failure, backoff)
            self._terminate(server)


__all__ = ["LocalTarget", "read_port_file"]
