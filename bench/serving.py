"""Throughput and latency of `modelloop serve` against its anchors, measured in the same run (issue 7).

Workload (from the issue): the reference model (breast-cancer, StandardScaler + 100-tree
HistGradientBoostingClassifier, `tests.models.register_reference_model`) from a real MLflow registry,
single-row requests, every server pinned to core 0 and the load generator (h2load, HTTP/2;
`apt-get install nghttp2-client`) to core 1, `BENCH_DURATION` seconds (default 10) per point after a 2 s
warm-up. Measured here, one after another:
- a trivial grpc.aio unary method (the ceiling of one Python process), 64 concurrent;
- `modelloop serve` with the prediction log off (16 and 64 concurrent) and on (SQLite, 64 concurrent);
- `mlflow models serve --env-manager local` (REST, one worker), 16 and 64 concurrent;
- MLServer with adaptive batching, only when `mlserver` and `mlserver-mlflow` are installed (they are not
  project dependencies); otherwise the issue's recorded MLServer figures are printed, labelled as recorded.
h2load only sees HTTP statuses, so gRPC status codes are checked through the server's request counter.
Prints a table and the ratios the issue sets as targets; returns non-zero only when a run could not be made.

Run: `make bench` or `python bench/run.py serving` (about 3 minutes; the machine is shared, expect noise).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

DURATION = os.environ.get("BENCH_DURATION", "10")
WARMUP_S = 2
SERVER_CPU = "0"
LOADGEN_CPU = "1"
CONCURRENCY = 64
TRIVIAL = "trivial grpc.aio unary"
OURS = "modelloop serve"
OURS_LOGGED = "modelloop serve + prediction log"
MLFLOW = "mlflow models serve (REST)"
MLSERVER = "MLServer (gRPC, batching)"
#: issue 7, measured on this machine with the same workload: MLServer 1.7, gRPC v2, adaptive batching on
RECORDED_MLSERVER = {16: 289.0, 64: 381.0}

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
    load1: float  # the machine's 1-minute load average before the point: the noise it ran in


def _wait(predicate: Callable[[], object], timeout: float, what: str, proc: subprocess.Popen[Any]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what}: process exited with {proc.returncode}")
        try:
            if predicate():
                return
        except Exception:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"timed out waiting for {what}")


def _spawn(cmd: list[str], env: dict[str, str], *, quiet: bool = False) -> subprocess.Popen[Any]:
    """Start a server pinned to the server core, in its own process group (it may fork workers)."""
    out = subprocess.DEVNULL if quiet else None
    return subprocess.Popen(
        ["taskset", "-c", SERVER_CPU, *cmd], env=env, stdout=out, stderr=out, start_new_session=True
    )


def _stop(proc: subprocess.Popen[Any]) -> None:
    """SIGTERM to the server's process group (its workers too), SIGKILL after 30 s."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


def _h2load(
    url: str, body: Path, concurrency: int, *, grpc: bool, work: Path
) -> tuple[float, float, float, int]:
    """(requests/s, p50 ms, p99 ms, failed) of one point, warm-up left out."""
    import numpy as np

    log_file = work / "h2load.log"
    log_file.unlink(missing_ok=True)
    if grpc:
        clients = max(1, concurrency // 8)
        args = ["-c", str(clients), "-m", str(concurrency // clients),
                "-H", "content-type: application/grpc", "-H", "te: trailers"]  # fmt: skip
    else:
        args = ["--h1", "-c", str(concurrency), "-m", "1", "-H", "content-type: application/json"]
    cmd = ["taskset", "-c", LOADGEN_CPU, "h2load", *args, "-d", str(body), "-D", DURATION,
           "--warm-up-time", str(WARMUP_S), f"--log-file={log_file}", url]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    lines = out.splitlines()
    rps = next(float(line.split(",")[1].split()[0]) for line in lines if line.startswith("finished in"))
    # "requests: N total, N started, N done, N succeeded, N failed, N errored, N timeout" (failed includes
    # errored and timeout); "status codes: N 2xx, N 3xx, N 4xx, N 5xx" (h2load counts a 5xx as succeeded)
    fields = next(line for line in lines if line.startswith("requests:")).split(",")
    codes = next(line for line in lines if line.startswith("status codes:")).split(":")[1].split(",")
    failed = int(fields[4].split()[0]) + sum(int(c.split()[0]) for c in codes[1:])
    # h2load logs the measured requests only (not the warm-up): start µs, HTTP status, duration µs
    rows = [line.split("\t") for line in log_file.read_text().splitlines() if line]
    latency_ms = np.array([int(r[2]) for r in rows], dtype=np.float64) / 1000.0
    if not len(latency_ms):
        return rps, float("nan"), float("nan"), failed
    p50, p99 = np.percentile(latency_ms, [50, 99])
    return rps, float(p50), float(p99), failed


def _grpc_frame(message: bytes) -> bytes:
    """A gRPC length-prefixed message (uncompressed), the body h2load sends."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


def _calls_by_status(metrics_port: int) -> tuple[float, float]:
    """(OK, not OK) calls so far, from the server's `modelloop_serving_requests_total`."""
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    ok = bad = 0.0
    for line in text.splitlines():
        if line.startswith("modelloop_serving_requests_total{"):
            value = float(line.rsplit(" ", 1)[1])
            if 'code="OK"' in line:
                ok += value
            else:
                bad += value
    return ok, bad


def _metric(metrics_port: int, name: str) -> float:
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + " "))


class Bench:
    """One run: the registry, the request bodies, and the points measured so far."""

    def __init__(self, work: Path, env: dict[str, str], tracking_uri: str, version: str, row: Any) -> None:
        import numpy as np

        from modelloop.contract.wire._generated.inference import grpc_predict_v2_pb2 as pb

        self.work, self.env, self.tracking_uri, self.version, self.row = work, env, tracking_uri, version, row
        self.points: list[Point] = []
        self.notes: list[str] = []
        request = pb.ModelInferRequest(model_name="bench-serving")
        request.inputs.add(name="input-0", datatype="FP64", shape=[1, row.shape[1]])
        request.raw_input_contents.append(row.to_numpy(dtype=np.float64).astype("<f8").tobytes())
        self.grpc_body = work / "grpc.bin"
        self.grpc_body.write_bytes(_grpc_frame(request.SerializeToString()))
        self.rest_body = work / "rest.json"
        self.rest_body.write_text(json.dumps({"dataframe_split": row.to_dict(orient="split", index=False)}))

    def measure(
        self, name: str, url: str, concurrency: int, *, grpc: bool = True, failed_extra: int = 0
    ) -> Point:
        load1 = os.getloadavg()[0]
        rps, p50, p99, failed = _h2load(
            url, self.grpc_body if grpc else self.rest_body, concurrency, grpc=grpc, work=self.work
        )
        point = Point(name, concurrency, rps, p50, p99, failed + failed_extra, load1)
        self.points.append(point)
        print(f"  measured: {name} at {concurrency}: {rps:.0f} req/s, p99 {p99:.1f} ms", flush=True)
        return point

    def trivial(self) -> None:
        port_file = self.work / "trivial.port"
        proc = _spawn([sys.executable, "-c", TRIVIAL_SERVER, str(port_file)], self.env)
        try:
            _wait(lambda: port_file.read_text().strip().isdigit(), 30, "trivial server", proc)
            port = port_file.read_text().strip()
            self.measure(
                TRIVIAL, f"http://127.0.0.1:{port}/inference.GRPCInferenceService/ModelInfer", CONCURRENCY
            )
        finally:
            _stop(proc)

    def ours(self, name: str, log_url: str, levels: tuple[int, ...]) -> None:
        port_file = self.work / f"serve-{len(self.points)}.port"
        cmd = [
            sys.executable,
            "-m",
            "modelloop",
            "serve",
            "--model",
            f"bench-serving/{self.version}",
            "--port",
            "0",
            "--metrics-port",
            "0",
            "--port-file",
            str(port_file),
            "--tracking-uri",
            self.tracking_uri,
            "--prediction-log-url",
            log_url,
            "--log-level",
            "WARNING",
        ]
        proc = _spawn(cmd, self.env)
        try:
            _wait(port_file.exists, 180, OURS, proc)
            ports = json.loads(port_file.read_text())
            url = f"http://127.0.0.1:{ports['grpc']}/inference.GRPCInferenceService/ModelInfer"
            for c in levels:
                ok_before, bad_before = _calls_by_status(ports["metrics"])
                point = self.measure(name, url, c)
                ok, bad = _calls_by_status(ports["metrics"])
                if ok == ok_before:
                    raise RuntimeError(f"{OURS} answered no call with grpc-status OK")
                if bad > bad_before:
                    self.points[-1] = point._replace(failed=point.failed + int(bad - bad_before))
            if log_url != "none":
                dropped = _metric(ports["metrics"], "modelloop_serving_predlog_dropped_records_total")
                written = _metric(ports["metrics"], "modelloop_serving_predlog_written_records_total")
                self.notes.append(
                    f"prediction log: {written:.0f} records written by the end, {dropped:.0f} dropped"
                )
        finally:
            _stop(proc)

    def mlflow_serve(self) -> None:
        from modelloop.deploy.mlflow_server import free_port

        port = free_port()
        cmd = [
            sys.executable,
            "-m",
            "mlflow",
            "models",
            "serve",
            "-m",
            f"models:/bench-serving/{self.version}",
            "--env-manager",
            "local",
            "-w",
            "1",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ]
        proc = _spawn(cmd, {**self.env, "MLFLOW_TRACKING_URI": self.tracking_uri}, quiet=True)
        try:
            ping = f"http://127.0.0.1:{port}/ping"
            _wait(lambda: urllib.request.urlopen(ping, timeout=2).status == 200, 180, MLFLOW, proc)
            check = urllib.request.Request(
                f"http://127.0.0.1:{port}/invocations",
                data=self.rest_body.read_bytes(),
                headers={"content-type": "application/json"},
            )
            answer = json.loads(urllib.request.urlopen(check, timeout=30).read())  # one real prediction
            if len(answer.get("predictions", [])) != 1:
                raise RuntimeError(f"{MLFLOW} answered the request body without one prediction")
            for c in (16, CONCURRENCY):
                self.measure(MLFLOW, f"http://127.0.0.1:{port}/invocations", c, grpc=False)
        finally:
            _stop(proc)

    def mlserver(self) -> None:
        """MLServer 1.x with its MLflow runtime and adaptive batching, same pinning (only when installed)."""
        import mlflow

        from modelloop.contract.wire._generated.inference import grpc_predict_v2_pb2 as pb
        from modelloop.deploy.mlflow_server import free_port

        models = self.work / "mlserver"
        model_dir = models / "bench-serving"
        model_dir.mkdir(parents=True)
        mlflow.set_tracking_uri(self.tracking_uri)
        local = mlflow.artifacts.download_artifacts(
            f"models:/bench-serving/{self.version}", dst_path=str(model_dir / "model")
        )
        grpc_port, http_port, metrics_port = free_port(), free_port(), free_port()
        (models / "settings.json").write_text(json.dumps({
            "grpc_port": grpc_port, "http_port": http_port, "metrics_port": metrics_port,
            "parallel_workers": 0, "host": "127.0.0.1",
        }))  # fmt: skip
        (model_dir / "model-settings.json").write_text(json.dumps({
            "name": "bench-serving", "implementation": "mlserver_mlflow.MLflowRuntime",
            "max_batch_size": CONCURRENCY, "max_batch_time": 0.001, "parameters": {"uri": local},
        }))  # fmt: skip
        request = pb.ModelInferRequest(model_name="bench-serving")
        request.parameters["content_type"].string_param = "pd"
        for name in self.row.columns:
            tensor = request.inputs.add(name=name, datatype="FP64", shape=[1])
            tensor.contents.fp64_contents.append(float(self.row[name].iloc[0]))
        body = self.work / "mlserver.bin"
        body.write_bytes(_grpc_frame(request.SerializeToString()))
        proc = _spawn(["mlserver", "start", str(models)], self.env, quiet=True)
        try:
            ready = f"http://127.0.0.1:{http_port}/v2/models/bench-serving/ready"
            _wait(lambda: urllib.request.urlopen(ready, timeout=2).status == 200, 180, MLSERVER, proc)
            url = f"http://127.0.0.1:{grpc_port}/inference.GRPCInferenceService/ModelInfer"
            saved, self.grpc_body = self.grpc_body, body
            try:
                for c in (16, CONCURRENCY):
                    self.measure(MLSERVER, url, c)
            finally:
                self.grpc_body = saved
            self.notes.append("MLServer: gRPC statuses not checked (h2load sees HTTP statuses only)")
        finally:
            _stop(proc)


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
    if (os.cpu_count() or 1) < 2:
        print("bench/serving: needs 2 cores (server and load generator pinned apart)", file=sys.stderr)
        return 1
    from modelloop.deploy.mlflow_server import MlflowServer
    from tests.models import register_reference_model

    work = Path(tempfile.mkdtemp(prefix="modelloop-bench-serving-"))
    # the venv's bin first: `mlflow models serve` runs `uvicorn` (and MLServer its own tools) from PATH
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = {**os.environ, "PYTHONPATH": str(root), "PATH": path}
    print(
        f"workload: breast-cancer StandardScaler + 100-tree HGB, single-row requests, {DURATION} s a point; "
        f"servers on core {SERVER_CPU}, h2load on core {LOADGEN_CPU}",
        flush=True,
    )
    mlflow_server = MlflowServer(work / "mlflow")
    mlflow_server.start(timeout=180)
    try:
        reg = register_reference_model(mlflow_server.url, "bench-serving", max_iter=100)
        bench = Bench(work, env, mlflow_server.url, reg.version, reg.features.head(1))
        stages: list[tuple[str, Callable[[], None]]] = [
            (TRIVIAL, bench.trivial),
            (OURS, lambda: bench.ours(OURS, "none", (16, CONCURRENCY))),
            (OURS_LOGGED, lambda: bench.ours(OURS_LOGGED, f"sqlite:///{work / 'log.db'}", (CONCURRENCY,))),
            (MLFLOW, bench.mlflow_serve),
        ]
        if shutil.which("mlserver") and importlib.util.find_spec("mlserver_mlflow"):
            stages.append((MLSERVER, bench.mlserver))
        failures = 0
        for name, stage in stages:  # one server that cannot be measured does not lose the others' figures
            try:
                stage()
            except Exception as exc:
                failures += 1
                bench.notes.append(f"{name}: NOT MEASURED ({type(exc).__name__}: {exc})")
                print(f"  {name}: not measured: {exc}", file=sys.stderr, flush=True)
    finally:
        mlflow_server.stop()
    _report(bench.points, bench.notes)
    shutil.rmtree(work, ignore_errors=True)
    return 1 if failures else 0


def _report(points: list[Point], notes: list[str]) -> None:
    print(f"\n{'server':<34}{'conc':>5}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'failed':>8}{'load1':>7}")
    for p in points:
        print(
            f"{p.name:<34}{p.concurrency:>5}{p.rps:>9.0f}{p.p50_ms:>9.2f}{p.p99_ms:>9.2f}{p.failed:>8}{p.load1:>7.2f}"
        )
    measured_mlserver = any(p.name == MLSERVER for p in points)
    if not measured_mlserver:
        for c, recorded in RECORDED_MLSERVER.items():
            print(
                f"{'MLServer 1.7 (RECORDED, issue 7)':<34}{c:>5}{recorded:>9.0f}"
                f"{'-':>9}{'-':>9}{'-':>8}{'-':>7}"
            )

    def point(name: str, c: int = CONCURRENCY) -> Point | None:
        return next((p for p in points if p.name == name and p.concurrency == c), None)

    def rps(name: str, c: int = CONCURRENCY) -> float:
        p = point(name, c)
        return p.rps if p is not None else float("nan")

    ours = rps(OURS)
    ours_point = point(OURS)
    p99 = ours_point.p99_ms if ours_point is not None else float("nan")

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    ceiling = ours / rps(TRIVIAL)
    vs_mlflow = ours / rps(MLFLOW)
    cost = 1 - rps(OURS_LOGGED) / ours
    print(f"\nratios at {CONCURRENCY} concurrent, one run (targets from issue 7):")
    print(f"  {OURS} / trivial grpc.aio ceiling : {ceiling:6.2f}   (>= 0.65: {verdict(ceiling >= 0.65)})")
    print(f"  {OURS} / mlflow models serve      : {vs_mlflow:6.1f}x  (>= 25x: {verdict(vs_mlflow >= 25)})")
    if measured_mlserver:
        vs = ours / rps(MLSERVER)
        print(f"  {OURS} / MLServer (measured)      : {vs:6.1f}x  (>= 5x: {verdict(vs >= 5)})")
    else:
        vs = ours / RECORDED_MLSERVER[CONCURRENCY]
        print(
            f"  {OURS} / MLServer (RECORDED {RECORDED_MLSERVER[CONCURRENCY]:.0f} req/s, not measured here): "
            f"{vs:6.1f}x  (>= 5x: {verdict(vs >= 5)})"
        )
    print(f"  p99 latency of {OURS}             : {p99:6.1f} ms (< 50 ms: {verdict(p99 < 50)})")
    print(
        f"  throughput cost of prediction logging   : {cost * 100:6.1f} %  (<= 10 %: {verdict(cost <= 0.10)})"
    )
    failed = sum(p.failed for p in points)
    print(f"  failed calls over the run               : {failed}")
    if not measured_mlserver:
        notes.append(
            "MLServer and mlserver-mlflow are not installed (not project dependencies): its figures are "
            "the ones recorded in issue 7 on this machine, not measured in this run"
        )
    notes.append(
        "one run on a shared 2-core machine: other processes compete for both cores (see load1), so "
        "figures vary from run to run; compare ratios, not absolute numbers"
    )
    for note in notes:
        print(f"  note: {note}")


if __name__ == "__main__":
    raise SystemExit(main())
