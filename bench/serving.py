"""Scoring throughput and latency of `modelloop serve` against its anchors, measured in the same run.

Workload (from the issue): the reference model (breast-cancer, StandardScaler + 100-tree
HistGradientBoostingClassifier) from a real MLflow registry, single-row requests, each server pinned to core
0 and the load generator (h2load, HTTP/2; `apt-get install nghttp2-client`) to core 1, 10 s per point after a
2 s warm-up. Anchors:
- a trivial grpc.aio unary method (the ceiling of one Python process),
- `mlflow models serve --env-manager local` (REST, one worker),
- MLServer with adaptive batching, when the `mlserver` command is installed (it is not a project dependency).
gRPC status codes are checked through the server's own request counter (h2load only sees HTTP statuses).
Prints a table and the ratios the issue sets as targets; returns non-zero only when a run could not be made.

Run: `python bench/run.py serving` (about 3 minutes).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import NamedTuple

DURATION = os.environ.get("BENCH_DURATION", "10")
WARMUP = "2"
SERVER_CPU = "0"
LOADGEN_CPU = "1"
MLFLOW = "mlflow models serve (REST)"

TRIVIAL_SERVER = r"""
import asyncio, grpc, sys
async def main():
    async def infer(request, context):
        return b""
    handler = grpc.method_handlers_generic_handler(
        "inference.GRPCInferenceService", {"ModelInfer": grpc.unary_unary_rpc_method_handler(infer)})
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    open(sys.argv[1], "w").write(str(port))
    await server.wait_for_termination()
asyncio.run(main())
"""


class Point(NamedTuple):
    name: str
    concurrency: int
    rps: float
    p50_ms: float
    p99_ms: float
    failed: int


def _wait(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:  # type: ignore[no-untyped-def, type-arg]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: process exited with {proc.returncode}")
        try:
            if predicate():
                return
        except Exception:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"timed out waiting for {what}")


def _stop(proc: subprocess.Popen) -> None:  # type: ignore[type-arg]
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _h2load(
    url: str, body: Path, concurrency: int, *, grpc: bool, work: Path
) -> tuple[float, float, float, int]:
    log_file = work / "h2load.log"
    log_file.unlink(missing_ok=True)
    if grpc:
        clients = max(1, concurrency // 8)
        args = ["-c", str(clients), "-m", str(concurrency // clients),
                "-H", "content-type: application/grpc", "-H", "te: trailers"]  # fmt: skip
    else:
        args = ["--h1", "-c", str(concurrency), "-m", "1", "-H", "content-type: application/json"]
    cmd = ["taskset", "-c", LOADGEN_CPU, "h2load", *args, "-d", str(body), "-D", DURATION,
           "--warm-up-time", WARMUP, f"--log-file={log_file}", url]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rps = next(
        float(line.split(",")[1].split()[0]) for line in out.splitlines() if line.startswith("finished in")
    )
    req_line = next(line for line in out.splitlines() if line.startswith("requests:"))
    failed = int(req_line.split(",")[4].split()[0]) + int(req_line.split(",")[5].split()[0])
    latencies = sorted(
        int(line.split("\t")[2]) / 1000.0 for line in log_file.read_text().splitlines() if line
    )
    p50 = statistics.median(latencies) if latencies else float("nan")
    p99 = latencies[int(0.99 * (len(latencies) - 1))] if latencies else float("nan")
    return rps, p50, p99, failed


def _grpc_frame(message: bytes) -> bytes:
    return b"\x00" + len(message).to_bytes(4, "big") + message


def _non_ok_calls(metrics_port: int) -> tuple[float, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
    ok = bad = 0.0
    for line in text.splitlines():
        if line.startswith("modelloop_serving_requests_total{"):
            value = float(line.rsplit(" ", 1)[1])
            if 'code="OK"' in line:
                ok += value
            else:
                bad += value
    return ok, bad


def main() -> int:
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    root = Path(__file__).resolve().parent.parent
    sys.path.insert(0, str(root))
    for tool in ("h2load", "taskset"):
        if shutil.which(tool) is None:
            print(
                f"bench/serving: {tool} not found (h2load: apt-get install nghttp2-client)", file=sys.stderr
            )
            return 1
    import numpy as np

    from deploy.mlflow_server import MlflowServer
    from serving._generated.inference import grpc_predict_v2_pb2 as pb
    from tests.models import register_reference_model

    work = Path(tempfile.mkdtemp(prefix="modelloop-bench-serving-"))
    env = {**os.environ, "PYTHONPATH": str(root)}
    points: list[Point] = []
    notes: list[str] = []
    mlflow_server = MlflowServer(work / "mlflow")
    mlflow_server.start(timeout=180)
    try:
        reg = register_reference_model(mlflow_server.url, "bench-serving", max_iter=100)
        row = reg.features.head(1)
        request = pb.ModelInferRequest(model_name="bench-serving")
        request.inputs.add(name="input-0", datatype="FP64", shape=[1, row.shape[1]])
        request.raw_input_contents.append(row.to_numpy(dtype=np.float64).astype("<f8").tobytes())
        grpc_body = work / "grpc.bin"
        grpc_body.write_bytes(_grpc_frame(request.SerializeToString()))
        rest_body = work / "rest.json"
        rest_body.write_text(json.dumps({"dataframe_split": row.to_dict(orient="split", index=False)}))

        # anchor: the trivial grpc.aio ceiling
        port_file = work / "trivial.port"
        proc = subprocess.Popen(
            ["taskset", "-c", SERVER_CPU, sys.executable, "-c", TRIVIAL_SERVER, str(port_file)]
        )
        try:
            _wait(lambda: port_file.read_text().strip().isdigit(), 30, "trivial server", proc)
            url = (
                f"http://127.0.0.1:{port_file.read_text().strip()}/inference.GRPCInferenceService/ModelInfer"
            )
            rps, p50, p99, failed = _h2load(url, grpc_body, 64, grpc=True, work=work)
            points.append(Point("trivial grpc.aio unary", 64, rps, p50, p99, failed))
            print(points[-1], flush=True)
        finally:
            _stop(proc)

        # ours: prediction log off (16 and 64 concurrent), then on (SQLite)
        runs = [
            ("modelloop serve", "none", (16, 64)),
            ("modelloop serve + prediction log", f"sqlite:///{work / 'log.db'}", (64,)),
        ]
        for label, log_url, levels in runs:
            port_file = work / "serve.port"
            port_file.unlink(missing_ok=True)
            cmd = ["taskset", "-c", SERVER_CPU, sys.executable, "-m", "modelloop", "serve",
                   "--model", f"bench-serving/{reg.version}", "--port", "0", "--metrics-port", "0",
                   "--port-file", str(port_file), "--tracking-uri", mlflow_server.url,
                   "--prediction-log-url", log_url, "--log-level", "WARNING"]  # fmt: skip
            proc = subprocess.Popen(cmd, env=env)
            try:
                _wait(port_file.exists, 120, "modelloop serve", proc)
                ports = json.loads(port_file.read_text())
                url = f"http://127.0.0.1:{ports['grpc']}/inference.GRPCInferenceService/ModelInfer"
                for c in levels:
                    ok_before, bad_before = _non_ok_calls(ports["metrics"])
                    rps, p50, p99, failed = _h2load(url, grpc_body, c, grpc=True, work=work)
                    ok, bad = _non_ok_calls(ports["metrics"])
                    if ok == ok_before:
                        raise RuntimeError("modelloop serve answered no call with grpc-status OK")
                    points.append(Point(label, c, rps, p50, p99, failed + int(bad - bad_before)))
                    print(points[-1], flush=True)
            finally:
                _stop(proc)

        # anchor: mlflow models serve (REST)
        from deploy.mlflow_server import free_port

        port = free_port()
        cmd = ["taskset", "-c", SERVER_CPU, sys.executable, "-m", "mlflow", "models", "serve",
               "-m", f"models:/bench-serving/{reg.version}", "--env-manager", "local", "-w", "1",
               "-h", "127.0.0.1", "-p", str(port)]  # fmt: skip
        proc = subprocess.Popen(cmd, env={**env, "MLFLOW_TRACKING_URI": mlflow_server.url},
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        try:
            _wait(lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2).status == 200,
                  180, "mlflow models serve", proc)  # fmt: skip
            for c in (16, 64):
                url = f"http://127.0.0.1:{port}/invocations"
                rps, p50, p99, failed = _h2load(url, rest_body, c, grpc=False, work=work)
                points.append(Point(MLFLOW, c, rps, p50, p99, failed))
                print(points[-1], flush=True)
        finally:
            _stop(proc)

        if shutil.which("mlserver") is None:
            notes.append("MLServer: not installed here (not a project dependency); its ratio is not measured")
    finally:
        mlflow_server.stop()

    _report(points, notes)
    return 0


def _report(points: list[Point], notes: list[str]) -> None:
    print(f"{'server':<36}{'conc':>6}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'failed':>8}")
    for p in points:
        print(f"{p.name:<36}{p.concurrency:>6}{p.rps:>10.0f}{p.p50_ms:>9.2f}{p.p99_ms:>9.2f}{p.failed:>8}")

    def rps(name: str, c: int) -> float:
        return next((p.rps for p in points if p.name == name and p.concurrency == c), float("nan"))

    ours = rps("modelloop serve", 64)
    p99 = next(p.p99_ms for p in points if p.name == "modelloop serve" and p.concurrency == 64)
    print("\nratios at 64 concurrent (targets from the issue):")
    print(
        f"  modelloop / trivial grpc.aio ceiling : {ours / rps('trivial grpc.aio unary', 64):6.2f}  (>= 0.65)"
    )
    print(f"  modelloop / mlflow models serve      : {ours / rps(MLFLOW, 64):6.1f}x (>= 25x)")
    print(f"  p99 latency of modelloop             : {p99:6.1f} ms (< 50 ms)")
    cost = 1 - rps("modelloop serve + prediction log", 64) / ours
    print(f"  throughput cost of prediction logging: {cost * 100:6.1f} %  (<= 10 %)")
    for note in notes:
        print(f"  {note}")


if __name__ == "__main__":
    raise SystemExit(main())
