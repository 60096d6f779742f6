"""`modelloop serve --workers 2` (issue 14) as a real subprocess in front of the session's MLflow server:

- both workers answer (calls over fresh connections land on two worker processes, seen from the kernel's
  socket tables), with the model's own answers, and the one metrics endpoint counts every call of both;
- a hot swap returns only once every worker serves the new version (50 calls over fresh connections after it
  all answer it); a version that cannot load leaves the old one on every worker;
- a killed worker is restarted by the supervisor with the version the others serve now; health says
  NOT_SERVING until it serves again (held there by keeping MLflow away), while the other worker answers;
- SIGTERM drains every worker and the supervisor exits 0.
No timed assertions: conditions are waited for with generous timeouts.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from modelloop.client import ModelLoadError, ScoringClient, build_request, decode_outputs
from modelloop.contract.wire._generated.inference import grpc_predict_v2_pb2_grpc as pb_grpc

from .conftest import ADMIN_TOKEN, REF, Models
from .test_registry_outage import Relay, _environment
from .test_swap import wait_for

GRACE = 5.0
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass
class Workers:
    """One `modelloop serve --workers 2` subprocess."""

    proc: subprocess.Popen[bytes]
    port_file: Path
    log: Path

    @property
    def ports(self) -> dict[str, int]:
        return dict(json.loads(self.port_file.read_text()))

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.ports['grpc']}"

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")

    def health(self) -> int | None:
        with grpc.insecure_channel(self.address) as channel:
            try:
                request = health_pb2.HealthCheckRequest(service="")
                return int(health_pb2_grpc.HealthStub(channel).Check(request, timeout=2).status)
            except grpc.RpcError:
                return None

    def workers(self) -> list[int]:
        """Pids of the worker processes: the supervisor's children listening on the gRPC port."""
        port = self.ports["grpc"]
        return [pid for pid in _children(self.proc.pid) if _sockets(pid, port, state="0A")]

    def calls_counted(self) -> float:
        """OK calls in the supervisor's metrics (every worker's, summed)."""
        url = f"http://127.0.0.1:{self.ports['metrics']}/metrics"
        text = urllib.request.urlopen(url, timeout=5).read().decode()
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("modelloop_serving_requests_total{") and 'code="OK"' in line
        )


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def _sockets(pid: int, port: int, *, state: str) -> int:
    """How many of `pid`'s TCP sockets have local port `port` in `state` (01 established, 0A listening)."""
    inodes = set()
    try:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        return 0
    count = 0
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == state and fields[9] in inodes:
                count += 1
    return count


@pytest.fixture
def serve_workers(tmp_path: Path) -> Iterator[Callable[..., Workers]]:
    started: list[Workers] = []

    def start(model: str, tracking_uri: str, *flags: str) -> Workers:
        port_file = tmp_path / f"serve-{len(started)}.port"
        log = tmp_path / f"serve-{len(started)}.log"
        admin = tmp_path / "admin-token"
        admin.write_text(ADMIN_TOKEN)
        with log.open("wb") as err:
            proc = subprocess.Popen(
                [
                    sys.executable, "-m", "modelloop", "serve", "--workers", "2", "--model", model,
                    "--tracking-uri", tracking_uri, "--port", "0", "--port-file", str(port_file),
                    "--metrics-port", "0", "--prediction-log-url", "none", "--grace-period", str(GRACE),
                    "--admin-token-file", str(admin), *flags,
                ],
                env=_environment(), cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=err,
            )  # fmt: skip
        server = Workers(proc, port_file, log)
        started.append(server)
        wait_for(lambda: proc.poll() is not None or port_file.exists(), timeout=180, what="serve ready")
        assert proc.poll() is None, server.stderr()
        return server

    yield start
    for server in started:
        if server.proc.poll() is None:
            for pid in _children(server.proc.pid):
                os.kill(pid, signal.SIGKILL)
            server.proc.kill()
            server.proc.wait()


def _connection(address: str) -> grpc.Channel:
    """A channel with a TCP connection of its own (grpc shares one per target between channels otherwise)."""
    return grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])


def _predict(channel: grpc.Channel, rows: Any) -> tuple[str, Any]:
    """(version, predictions) of one call over `channel`."""
    stub = pb_grpc.GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]
    response = stub.ModelInfer(build_request(REF, rows), timeout=30)
    return response.model_version, decode_outputs(response)["predict"]


def _fresh_versions(address: str, models: Models, calls: int) -> list[str]:
    """The version answering each of `calls` calls, each over a new connection."""
    versions = []
    for _ in range(calls):
        with _connection(address) as channel:
            versions.append(_predict(channel, models.rows(2))[0])
    return versions


def test_two_workers_answer_alike_and_metrics_sum_them(serve_workers, models: Models) -> None:  # type: ignore[no-untyped-def]
    import mlflow

    server = serve_workers(f"{REF}/{models.v1.version}", models.tracking_uri)
    wait_for(lambda: server.health() == SERVING, timeout=60, what="health SERVING")
    workers = server.workers()
    assert len(workers) == 2, server.stderr()
    rows = models.v1.features.sample(20, random_state=3).reset_index(drop=True)
    expected = mlflow.sklearn.load_model(f"models:/{REF}/{models.v1.version}").predict(rows)
    channels = [_connection(server.address) for _ in range(16)]  # 16 connections, held open
    try:
        for channel in channels:
            np.testing.assert_array_equal(_predict(channel, rows)[1], expected)
        per_worker = {pid: _sockets(pid, server.ports["grpc"], state="01") for pid in workers}
        assert all(n > 0 for n in per_worker.values()), per_worker  # both workers took connections
        assert sum(per_worker.values()) == len(channels), per_worker
        wait_for(lambda: server.calls_counted() == len(channels), timeout=30, what="every call counted")
    finally:
        for channel in channels:
            channel.close()


def test_hot_swap_reaches_every_worker_before_it_returns(serve_workers, models: Models) -> None:  # type: ignore[no-untyped-def]
    server = serve_workers(f"{REF}/{models.v1.version}", models.tracking_uri)
    wait_for(lambda: server.health() == SERVING, timeout=60, what="health SERVING")
    with ScoringClient(server.address, admin_token=ADMIN_TOKEN) as admin:
        status = admin.load_model(REF, models.v2.version)
        assert status.champion_version == models.v2.version
        assert set(_fresh_versions(server.address, models, 50)) == {models.v2.version}
        with pytest.raises(ModelLoadError):
            admin.load_model(REF, models.broken_version)
        assert set(_fresh_versions(server.address, models, 20)) == {models.v2.version}
        admin.load_model(REF, models.v1.version)
        assert set(_fresh_versions(server.address, models, 50)) == {models.v1.version}
    assert server.health() == SERVING


def test_a_killed_worker_is_restarted_with_the_current_version(serve_workers, models: Models) -> None:  # type: ignore[no-untyped-def]
    relay = Relay(models.tracking_uri)
    relay.forward()
    try:
        server = serve_workers(f"{REF}/{models.v1.version}", relay.url)
        wait_for(lambda: server.health() == SERVING, timeout=60, what="health SERVING")
        with ScoringClient(server.address, admin_token=ADMIN_TOKEN) as admin:
            admin.load_model(REF, models.v2.version)
        relay.close()  # MLflow away: the restarted worker cannot load, health stays NOT_SERVING
        victim, survivor = server.workers()
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: server.health() == NOT_SERVING, timeout=60, what="health NOT_SERVING")
        assert server.workers() == [survivor]  # the new worker binds only once it serves
        assert set(_fresh_versions(server.address, models, 5)) == {models.v2.version}
        relay.forward()
        wait_for(lambda: server.health() == SERVING, timeout=120, what="health SERVING again")
        workers = server.workers()
        assert len(workers) == 2 and survivor in workers and victim not in workers, workers
        assert set(_fresh_versions(server.address, models, 50)) == {models.v2.version}
        assert server.proc.poll() is None
    finally:
        relay.close()


def test_sigterm_drains_every_worker_and_exits_0(serve_workers, models: Models) -> None:  # type: ignore[no-untyped-def]
    server = serve_workers(f"{REF}/{models.v1.version}", models.tracking_uri)
    wait_for(lambda: server.health() == SERVING, timeout=60, what="health SERVING")
    workers = server.workers()
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=GRACE * 4 + 30) == 0, server.stderr()
    assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()]
    assert server.stderr().count("stopped") >= 2, server.stderr()
