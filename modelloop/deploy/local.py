"""The `local` deployment target: supervised `modelloop serve` subprocesses on this machine, one per binding
or (with `shared=True`) one for every binding, each binding's model hosted beside the others.

Used by `modelloop controller` and the local platform (`modelloop up`). A server keeps one gRPC port for its
whole life (`address(name)`), across promotions and restarts. In a shared server a binding is added by
loading its model into the running process and removed by unloading it; two bindings of one model cannot
share a server (the second is refused). A promotion is applied by hot swap through the scoring client's
`load_model` (`deploy.local_swap`: the new version loads and warms beside the old one, then takes over; no
call fails); if it cannot load, the old version keeps serving and `RolloutFailedError` is raised. A server
that exits on its own is restarted on the same port with the versions it last served, with exponential
backoff between attempts (`deploy.local_process`: `restart_backoff`, 1 s, doubling to `max_backoff`). The
scoring server is used only through its command and its client. Hot swap goes through the scoring server's
admin service, which a server runs only when started with an admin credential: the target makes one
(`admin_token`, a file only this user can read) and hands it to the servers it starts and to its own client,
nobody else.

This module is the port (the deployment verbs and shared mode); `local_process` starts, stops and restarts
the processes, `local_swap` moves a running server from one spec to the next.
"""

from __future__ import annotations

import builtins
import logging
import secrets
import sys
import threading
from collections.abc import Mapping
from pathlib import Path

from modelloop.client import ScoringClient
from modelloop.contract.errors import ModelloopError, UnavailableError

from .errors import PermanentError, RolloutFailedError, TemporaryError
from .local_process import ServerProcess, Supervisor
from .local_swap import swap, unload_quietly
from .mlflow_server import free_port
from .target import DeploymentSpec, DeploymentState, DeploymentTarget

log = logging.getLogger(__name__)

#: the key of the one server every binding shares (`shared=True`)
SHARED_KEY = "shared"


def _state(spec: DeploymentSpec) -> DeploymentState:
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
        self.host = host
        self.work_dir.mkdir(parents=True, exist_ok=True)
        # the admin service (hot swap) is the controller's alone: a credential made here, handed only to the
        # servers this target starts (a file only this user can read) and to its own client
        self.admin_token = secrets.token_urlsafe(32)
        self.admin_token_file = self.work_dir / "admin-token"
        self.admin_token_file.touch(mode=0o600)
        self.admin_token_file.chmod(0o600)
        self.admin_token_file.write_text(self.admin_token)
        self._servers: dict[str, ServerProcess] = {}  # key (binding name, or SHARED_KEY) -> server
        self._starting: dict[str, DeploymentSpec] = {}  # binding -> the spec its first rollout is starting
        self._lock = threading.Lock()
        self.processes = Supervisor(
            command=self.command,
            connect=self._connect,
            servers=self._all_servers,
            extra_env={"OMP_NUM_THREADS": "1", **(extra_env or {})},
            max_backoff=max_backoff,
            restart_backoff=restart_backoff,
            every=supervise_every,
            stop_grace=stop_grace,
        )

    # where a binding is served ----------------------------------------------------------------------------

    def _key(self, name: str) -> str:
        return SHARED_KEY if self.shared else name

    def _all_servers(self) -> builtins.list[ServerProcess]:
        with self._lock:
            return builtins.list(self._servers.values())

    def _server_of(self, name: str) -> ServerProcess | None:
        """The server a binding is deployed on, or None."""
        with self._lock:
            server = self._servers.get(self._key(name))
        return server if server is not None and name in server.specs else None

    def _known(self, name: str) -> ServerProcess:
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

    def starting(self, name: str) -> DeploymentSpec | None:
        """The spec a binding's first rollout is bringing up (its server not answering yet), or None."""
        with self._lock:
            return self._starting.get(name)

    def pid(self, name: str) -> int | None:
        """Process id of a binding's scoring server (None while it is down or being restarted)."""
        proc = self._known(name).proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def restarts(self, name: str) -> int:
        """Restarts of a binding's server since it last stayed up for `max_backoff` seconds."""
        return self._known(name).restarts

    # the deployment verbs ---------------------------------------------------------------------------------

    def create(self, spec: DeploymentSpec, *, deadline: float) -> DeploymentState:
        with self._lock:
            self._starting[spec.name] = spec
        try:
            return self._create(spec, deadline)
        finally:
            with self._lock:
                self._starting.pop(spec.name, None)

    def _create(self, spec: DeploymentSpec, deadline: float) -> DeploymentState:
        key = self._key(spec.name)
        with self._lock:
            server = self._servers.get(key)
        if server is not None:  # a shared server that runs already: add the binding's model to it
            return self._join(server, spec, deadline)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        server = ServerProcess(
            key=key,
            specs={spec.name: spec},
            port=free_port(self.host),
            port_file=self.work_dir / f"{key}.port",
            log_file=self.work_dir / f"{key}.log",
        )
        with server.lock:
            failure = self.processes.start(server, deadline=deadline)
            if failure:
                self.processes.terminate(server)
                raise RolloutFailedError(f"{spec.model}/{spec.champion_version}: {failure}")
            with self._lock:
                self._servers[key] = server
        return _state(spec)

    def _join(self, server: ServerProcess, spec: DeploymentSpec, deadline: float) -> DeploymentState:
        """Add a binding to the running shared server: load its model beside the others."""
        with server.lock:
            taken = [n for n, s in server.specs.items() if s.model == spec.model and n != spec.name]
            if taken:
                raise PermanentError(
                    f"binding {spec.name}: model {spec.model} is served by binding {taken[0]} in the shared "
                    "server already"
                )
            if not server.alive or server.client is None:
                raise TemporaryError(f"binding {spec.name}: shared server restarting", delay=2.0)
            try:
                swap(server.client, None, spec, deadline)
            except ModelloopError as exc:
                unload_quietly(server.client, spec.model)
                raise self._rollout_error(server, spec, exc) from None
            server.specs[spec.name] = spec
        return _state(spec)

    def update(self, spec: DeploymentSpec, *, deadline: float) -> DeploymentState:
        server = self._server_of(spec.name)
        if server is None:
            raise RolloutFailedError(f"binding {spec.name} is not deployed")
        with server.lock:
            if not server.alive or server.client is None:
                raise TemporaryError(f"binding {spec.name}: server restarting", delay=2.0)
            try:
                swap(server.client, server.specs[spec.name], spec, deadline)
            except ModelloopError as exc:
                raise self._rollout_error(server, spec, exc) from None
            server.specs[spec.name] = spec
        return _state(spec)

    @staticmethod
    def _rollout_error(server: ServerProcess, spec: DeploymentSpec, exc: ModelloopError) -> ModelloopError:
        if isinstance(exc, UnavailableError) and not server.alive:
            return TemporaryError(f"binding {spec.name}: server went away", delay=2.0)
        return RolloutFailedError(f"{spec.model}/{spec.champion_version}: {exc}")

    def delete(self, name: str) -> None:
        server = self._server_of(name)
        if server is None:
            return
        with server.lock:
            spec = server.specs.pop(name, None)
            if not server.specs:
                with self._lock:
                    self._servers.pop(server.key, None)
                self.processes.terminate(server)
            elif spec is not None and server.alive and server.client is not None:
                unload_quietly(server.client, spec.model)

    def get(self, name: str) -> DeploymentState | None:
        server = self._server_of(name)
        spec = None if server is None else server.specs.get(name)
        return None if spec is None else _state(spec)

    def list(self) -> builtins.list[DeploymentState]:
        return [_state(spec) for s in self._all_servers() for spec in builtins.list(s.specs.values())]

    def close(self) -> None:
        self.processes.close()
        with self._lock:
            servers = builtins.list(self._servers.values())
            self._servers.clear()
        for server in servers:
            with server.lock:
                self.processes.terminate(server)

    # what runs --------------------------------------------------------------------------------------------

    def command(self, server: ServerProcess) -> builtins.list[str]:
        """The `modelloop serve` command line: every binding's champion; the challenger only when the server
        has one binding (the command takes one; the others' challengers are loaded once it answers)."""
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
            "--workers", "1",  # one process per server: the local platform's resource use stays as it was
        ]  # fmt: skip
        if self.token_file is not None:
            cmd += ["--token-file", str(self.token_file)]
        cmd += ["--admin-token-file", str(self.admin_token_file)]
        return cmd

    def _connect(self, server: ServerProcess) -> ScoringClient:
        """The client of a started server: the callers' token (when set) and the admin credential."""
        token = None if self.token_file is None else self.token_file.read_text().strip()
        return ScoringClient(f"{self.host}:{server.port}", token=token, admin_token=self.admin_token)


__all__ = ["SHARED_KEY", "LocalTarget"]
