"""`modelloop serve` as a real subprocess: the port file once ready, SIGTERM draining (health goes
NOT_SERVING, in-flight calls finish, the prediction log is flushed, exit 0), and clear config errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
from click.testing import CliRunner
from grpc_health.v1 import health_pb2, health_pb2_grpc

from modelloop.cli import cli
from modelloop.client import ScoringClient
from modelloop.contract.predlog import SqlPredictionLog

from .conftest import REF, Models
from .test_swap import wait_for


def test_sigterm_drains_in_flight_calls_then_exits_zero(models: Models, tmp_path: Path) -> None:
    port_file = tmp_path / "serve.port"
    log_url = f"sqlite:///{tmp_path / 'log.db'}"
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "modelloop", "serve", "--model", f"{REF}@production",
            "--port", "0", "--port-file", str(port_file), "--metrics-port", "0",
            "--tracking-uri", models.tracking_uri, "--prediction-log-url", log_url,
            # requests wait 500 ms for their batch to fill: SIGTERM lands while they are in flight
            "--max-batch-size", "1000", "--max-batch-wait-ms", "500", "--max-batch-idle-ms", "500",
            "--grace-period", "20",
        ],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_for(lambda: port_file.exists() or proc.poll() is not None, timeout=120, what="the port file")
        assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
        ports = json.loads(port_file.read_text())
        assert set(ports) == {"grpc", "metrics"} and ports["metrics"] > 0
        address = f"127.0.0.1:{ports['grpc']}"
        channel = grpc.insecure_channel(address)
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""))
        statuses: list[int] = []
        watcher = threading.Thread(
            target=lambda: statuses.extend(r.status for r in _until_not_serving(watch))
        )
        watcher.start()
        results: dict[int, object] = {}

        def call(i: int) -> None:
            with ScoringClient(address) as client:
                try:
                    results[i] = client.predict(REF, models.rows(1), request_id=f"drain-{i}", timeout=30)
                except Exception as exc:
                    results[i] = exc

        callers = [threading.Thread(target=call, args=(i,)) for i in range(8)]
        for t in callers:
            t.start()
        time.sleep(0.25)  # the calls are now waiting in the batcher
        proc.send_signal(signal.SIGTERM)
        for t in callers:
            t.join(30)
        assert proc.wait(timeout=60) == 0
        watcher.join(10)
        channel.close()
        assert statuses[0] == health_pb2.HealthCheckResponse.SERVING
        assert statuses[-1] == health_pb2.HealthCheckResponse.NOT_SERVING
        failures = {i: r for i, r in results.items() if isinstance(r, Exception)}
        assert len(results) == 8 and not failures, failures
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    store = SqlPredictionLog(log_url)
    try:
        table = store.read_window(REF, 0, time.time() + 60)
        assert table is not None
        assert sorted(table.column("_request_id").to_pylist()) == sorted(f"drain-{i}" for i in range(8))
    finally:
        store.close()


def _until_not_serving(watch):  # type: ignore[no-untyped-def]
    try:
        for response in watch:
            yield response
            if response.status == health_pb2.HealthCheckResponse.NOT_SERVING:
                watch.cancel()
                return
    except grpc.RpcError:
        return


def test_configuration_errors_exit_2_with_one_line() -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["serve", "--port", "0", "--metrics-port", "0"])
    assert result.exit_code == 2 and "error: no model to serve" in result.output
    result = runner.invoke(cli, ["serve", "--model", "justaname", "--port", "0"])
    assert result.exit_code == 2 and "expected NAME@ALIAS or NAME/VERSION" in result.output
    result = runner.invoke(cli, ["serve", "--model", "m/1", "--canary-share", "3"])
    assert result.exit_code == 2 and "canary_share" in result.output
    result = runner.invoke(cli, ["serve", "--model", "m/1", "--challenger", "other/2", "--port", "0"])
    assert result.exit_code == 2 and "challenger model other is not one of the --model names" in result.output
