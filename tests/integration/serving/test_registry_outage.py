"""`modelloop serve` while MLflow is down or stuck (issue 12, finding 4), as real subprocesses in front of a
real MLflow server: a TCP relay stands between them, and the tests close it (MLflow down: connections
refused) or make it hang (MLflow stuck: connections accepted, never answered).

- against an unreachable registry, serve says so in one line within 30 s and exits non-zero;
- with `--wait-for-registry` it stays up with health NOT_SERVING, and serves once MLflow answers;
- SIGTERM stops it within its grace period while it waits, and while a load hangs on a stuck MLflow;
- a hot swap while MLflow is down fails fast with UNAVAILABLE and the old version keeps serving.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from modelloop.client import ScoringClient
from modelloop.contract.errors import UnavailableError
from modelloop.deploy.mlflow_server import free_port

from .conftest import ADMIN_TOKEN, REF, Models
from .test_swap import wait_for

GRACE = 5.0
#: how long past its grace period a stopping process may take (interpreter exit, log flush)
SLACK = 5.0


class Relay:
    """A TCP relay on a fixed loopback port in front of `target_url`: `forward()` passes connections
    through, `hang()` accepts connections and never answers, `close()` refuses (and cuts open ones)."""

    def __init__(self, target_url: str) -> None:
        parts = urlsplit(target_url)
        assert parts.hostname and parts.port
        self._target = (parts.hostname, parts.port)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._listener: socket.socket | None = None
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()

    def forward(self) -> None:
        self._listen(forward=True)

    def hang(self) -> None:
        self._listen(forward=False)

    def close(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            sockets, self._open = self._open, []
        for sock in [*([listener] if listener else []), *sockets]:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in accept() or recv()
            sock.close()

    def _listen(self, *, forward: bool) -> None:
        self.close()
        listener = socket.create_server(("127.0.0.1", self.port))
        with self._lock:
            self._listener = listener
        threading.Thread(target=self._accept, args=(listener, forward), daemon=True).start()

    def _accept(self, listener: socket.socket, forward: bool) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with self._lock:
                self._open.append(conn)
            if not forward:
                continue  # held open, never answered
            upstream = socket.create_connection(self._target)
            with self._lock:
                self._open.append(upstream)
            for src, dst in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=_pump, args=(src, dst), daemon=True).start()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    for sock in (src, dst):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def relay(models: Models) -> Iterator[Relay]:
    relay = Relay(models.tracking_uri)
    yield relay
    relay.close()


@dataclass
class Serve:
    """One `modelloop serve` subprocess; stderr goes to a file (read with `stderr()`)."""

    proc: subprocess.Popen[bytes]
    port: int
    port_file: Path
    log: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")

    def health(self) -> int | None:
        """The whole server's health status, or None while nothing answers."""
        with grpc.insecure_channel(self.address) as channel:
            try:
                request = health_pb2.HealthCheckRequest(service="")
                return int(health_pb2_grpc.HealthStub(channel).Check(request, timeout=1).status)
            except grpc.RpcError:
                return None

    def stop_within(self, seconds: float) -> tuple[int, float]:
        """SIGTERM, then (exit code, seconds it took); fails if the process outlives `seconds`."""
        began = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running {seconds:.0f} s after SIGTERM:\n{self.stderr()}") from None
        return code, time.monotonic() - began


def _environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "MODELLOOP_"))}
    return {**env, "OMP_NUM_THREADS": "1"}


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Serve]]:
    started: list[Serve] = []

    def start(model: str, tracking_uri: str, *flags: str, env: dict[str, str] | None = None) -> Serve:
        port = free_port()
        port_file = tmp_path / f"serve-{port}.port"
        log = tmp_path / f"serve-{port}.log"
        admin = tmp_path / "admin-token"
        admin.write_text(ADMIN_TOKEN)
        with log.open("wb") as err:
            proc = subprocess.Popen(
                [
                    sys.executable, "-m", "modelloop", "serve", "--model", model,
                    "--tracking-uri", tracking_uri, "--port", str(port), "--port-file", str(port_file),
                    "--metrics-port", "0",
                    "--prediction-log-url", "none", "--grace-period", str(GRACE),
                    "--admin-token-file", str(admin), *flags,
                ],
                env={**_environment(), **(env or {})}, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=err,
            )  # fmt: skip
        server = Serve(proc, port, port_file, log)
        started.append(server)
        return server

    yield start
    for server in started:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()


def _not_serving(server: Serve) -> None:
    """Wait until the server answers health with NOT_SERVING (it is up, and loading)."""
    wait_for(
        lambda: (
            server.proc.poll() is not None or server.health() == health_pb2.HealthCheckResponse.NOT_SERVING
        ),
        timeout=60,
        what="health NOT_SERVING",
    )
    assert server.proc.poll() is None, server.stderr()


def _error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error:")]


def test_serve_against_an_unreachable_registry_says_so_in_one_line_within_30_s(tmp_path: Path) -> None:
    closed = free_port()  # nothing listens there
    began = time.monotonic()
    try:
        done = subprocess.run(
            [
                sys.executable, "-m", "modelloop", "serve", "--model", f"{REF}@production",
                "--tracking-uri", f"http://127.0.0.1:{closed}", "--port", "0", "--metrics-port", "0",
                "--prediction-log-url", "none",
            ],
            env=_environment(), cwd=tmp_path, capture_output=True, text=True, timeout=45, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        raise AssertionError("serve was still waiting for the registry after 45 s") from None
    took = time.monotonic() - began
    assert took < 30, took
    assert done.returncode == 4, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    errors = _error_lines(done.stderr)
    assert len(errors) == 1 and done.stderr.strip().splitlines()[-1] == errors[0], done.stderr
    assert "unreachable" in errors[0] and f"127.0.0.1:{closed}" in errors[0], errors[0]
    assert "--wait-for-registry" in errors[0] and len(errors[0]) < 300, errors[0]


def test_wait_for_registry_keeps_health_not_serving_then_serves_once_mlflow_answers(
    models: Models, relay: Relay, serve: Callable[..., Serve]
) -> None:
    server = serve(f"{REF}@production", relay.url, "--wait-for-registry")
    _not_serving(server)
    # the first attempt against the closed port has failed and the server waits (MLflow's own HTTP retries
    # come first, so how long that takes depends on the machine's load: wait for the line, not a fixed time)
    wait_for(
        lambda: "waiting for the registry" in server.stderr() or server.proc.poll() is not None,
        timeout=60,
        what="the first failed attempt",
    )
    assert server.proc.poll() is None, server.stderr()
    assert server.health() == health_pb2.HealthCheckResponse.NOT_SERVING
    assert not server.port_file.exists()
    relay.forward()
    wait_for(lambda: server.port_file.exists() or server.proc.poll() is not None, timeout=90, what="ready")
    assert server.proc.poll() is None, server.stderr()
    assert server.health() == health_pb2.HealthCheckResponse.SERVING
    with ScoringClient(server.address, admin_token=ADMIN_TOKEN) as client:
        result = client.predict(REF, models.rows(2), timeout=30)
    assert result.model_version == models.v1.version
    code, _ = server.stop_within(GRACE + SLACK)
    assert code == 0, server.stderr()
    assert "Traceback" not in server.stderr()


def test_wait_for_registry_is_also_read_from_the_environment(
    relay: Relay, serve: Callable[..., Serve]
) -> None:
    server = serve(f"{REF}@production", relay.url, env={"MODELLOOP_WAIT_FOR_REGISTRY": "true"})
    _not_serving(server)
    time.sleep(3)
    assert server.proc.poll() is None, server.stderr()
    code, _ = server.stop_within(GRACE + SLACK)
    assert code == 0, server.stderr()
    assert "Traceback" not in server.stderr(), server.stderr()


def test_sigterm_while_waiting_for_the_registry_stops_within_the_grace_period(
    relay: Relay, serve: Callable[..., Serve]
) -> None:
    server = serve(f"{REF}@production", relay.url, "--wait-for-registry")
    _not_serving(server)
    time.sleep(2)
    code, took = server.stop_within(GRACE + SLACK)
    assert code == 0, server.stderr()
    assert "Traceback" not in server.stderr(), server.stderr()
    assert took < GRACE + SLACK


def test_sigterm_during_a_load_from_a_stuck_registry_exits_promptly(
    relay: Relay, serve: Callable[..., Serve]
) -> None:
    relay.hang()  # MLflow accepts connections and never answers: the load blocks in a read
    server = serve(f"{REF}@production", relay.url)
    _not_serving(server)
    time.sleep(2)
    assert server.proc.poll() is None, server.stderr()
    code, took = server.stop_within(GRACE + SLACK)
    assert code == 0, server.stderr()
    assert "Traceback" not in server.stderr(), server.stderr()
    assert took < GRACE + SLACK


def test_kubernetes_scoring_pods_wait_for_the_registry_within_their_startup_probe() -> None:
    from modelloop.deploy.bindings import Binding
    from modelloop.deploy.kubernetes.manifests import render_binding

    [deployment] = [
        m
        for m in render_binding(Binding(name="b", model="m"), image="img", version="1")
        if m["kind"] == "Deployment"
    ]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert "--wait-for-registry" in container["args"]
    probe = container["startupProbe"]
    assert 60 <= probe["periodSeconds"] * probe["failureThreshold"] <= 600


def test_hot_swap_while_the_registry_is_down_fails_fast_and_the_old_version_keeps_serving(
    models: Models, relay: Relay, serve: Callable[..., Serve]
) -> None:
    relay.forward()
    server = serve(f"{REF}/{models.v1.version}", relay.url)
    wait_for(lambda: server.port_file.exists() or server.proc.poll() is not None, timeout=90, what="ready")
    assert server.proc.poll() is None, server.stderr()
    relay.close()  # MLflow is down
    with ScoringClient(server.address, admin_token=ADMIN_TOKEN) as client:
        began = time.monotonic()
        with pytest.raises(UnavailableError) as refused:
            client.load_model(REF, models.v2.version, timeout=20)
        took = time.monotonic() - began
        assert took < 10, took
        assert "unreachable" in str(refused.value), refused.value
        result = client.predict(REF, models.rows(2), timeout=30)
        assert result.model_version == models.v1.version
        assert [m.champion_version for m in client.list_models()] == [models.v1.version]
    assert server.health() == health_pb2.HealthCheckResponse.SERVING
    code, _ = server.stop_within(GRACE + SLACK)
    assert code == 0, server.stderr()


def test_sigterm_during_a_hot_swap_from_a_stuck_registry_stops_within_the_grace_period(
    models: Models, relay: Relay, serve: Callable[..., Serve]
) -> None:
    relay.forward()
    server = serve(f"{REF}/{models.v1.version}", relay.url)
    wait_for(lambda: server.port_file.exists() or server.proc.poll() is not None, timeout=90, what="ready")
    assert server.proc.poll() is None, server.stderr()
    relay.hang()  # MLflow stuck: the swap's first registry read never returns
    outcome: list[BaseException | None] = []

    def swap() -> None:
        try:
            with ScoringClient(server.address, admin_token=ADMIN_TOKEN) as client:
                client.load_model(REF, models.v2.version, timeout=60)
            outcome.append(None)
        except Exception as exc:
            outcome.append(exc)

    swapper = threading.Thread(target=swap)
    swapper.start()
    time.sleep(2)
    code, took = server.stop_within(GRACE + SLACK)
    swapper.join(10)
    assert code == 0, server.stderr()
    assert "Traceback" not in server.stderr(), server.stderr()
    assert took < GRACE + SLACK
    assert len(outcome) == 1 and isinstance(outcome[0], UnavailableError), outcome
