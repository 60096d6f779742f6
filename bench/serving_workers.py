"""CPU time per request of `modelloop serve --workers 2` against `--workers 1` at saturation (issue 14).

Workload: the reference model (breast-cancer, StandardScaler + 100-tree HistGradientBoosting, registered in a
real MLflow server), the client's request form (30 `[1]` FP64 tensors, raw contents; `_serving_forms`),
single-row calls at 64 concurrent from h2load (`bench/serving.py`'s driver, h2load on core 1), the server on
the cores `BENCH_SERVER_CPUS` names (default `0,1`: both, as a 2-CPU pod, whose default worker count is 2;
`0` puts both configurations on one core). Both configurations get the same cores and the same load.
`BENCH_DURATION` seconds a point (default 10) after a `BENCH_WARMUP` s warm-up; `ROUNDS` alternating rounds.

Measured: the CPU time (utime + stime in `/proc/<pid>/stat`) of the server's processes (the supervisor and
every worker: the process and its children), and the calls it answered (its own `requests_total` counter,
every gRPC status), both read just before and just after each point, and the rows per predict call (its
batch-size histogram: the model's fixed cost per call is shared by fewer requests when the same load is
split over two batchers). CPU time per request is their ratio; wall-clock throughput is printed only as
context (the machine is shared). Before and after each point a real
gRPC client checks the answer is the model's own. Prints the ratio N=2 / N=1 against the target (within 10 %).

Run: `python bench/run.py serving_workers` (about 2 minutes at the default duration).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

ROUNDS = 2
#: target (issue 14): CPU per request with 2 workers within 10 % of one worker's
TARGET = 1.10


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _cpu_seconds(pid: int) -> float:
    """utime + stime of `pid` and its live children, in seconds."""
    ticks = 0
    for p in [pid, *_children(pid)]:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of the whole line)
    return ticks / os.sysconf("SC_CLK_TCK")


def _batches(sv: Any, metrics_port: int) -> tuple[float, float]:
    """(rows, predict calls) so far, from the server's batch-size histogram."""
    rows = calls = 0.0
    for line in sv._scrape(metrics_port).splitlines():
        if line.startswith("modelloop_serving_batch_size_sum"):
            rows += float(line.rsplit(" ", 1)[1])
        elif line.startswith("modelloop_serving_batch_size_count"):
            calls += float(line.rsplit(" ", 1)[1])
    return rows, calls


def _measure(sv: Any, proc: Any, ports: dict[str, int], work: Path, workers: int) -> dict[str, float]:
    """One h2load point; the server's CPU seconds, calls and batches over it (read just around it)."""
    before, batches = sv._calls_by_code(ports["metrics"]), _batches(sv, ports["metrics"])
    cpu = _cpu_seconds(proc.pid)
    url = f"http://127.0.0.1:{ports['grpc']}/inference.GRPCInferenceService/ModelInfer"
    rps, _, _, failed = sv._h2load(url, work / "body.bin", sv.CONCURRENCY, grpc=True, work=work)
    cpu = _cpu_seconds(proc.pid) - cpu
    after, batches_after = sv._calls_by_code(ports["metrics"]), _batches(sv, ports["metrics"])
    calls = sum(after.values()) - sum(before.values())
    bad = sum(after.get(k, 0) - before.get(k, 0) for k in after if k not in ("OK", "CANCELLED"))
    if calls <= 0 or bad or failed > sv.CONCURRENCY:
        raise RuntimeError(f"--workers {workers}: {calls:.0f} calls, {bad:.0f} gRPC errors, {failed} failed")
    rows, predicts = (a - b for a, b in zip(batches_after, batches, strict=True))
    return {"cpu": cpu, "calls": calls, "rps": rps, "rows_per_batch": rows / max(predicts, 1.0)}


def _point(sv: Any, sf: Any, form: Any, expected: Any, env: dict[str, str], work: Path, workers: int,
           tracking_uri: str, version: str) -> float:  # fmt: skip
    """CPU ms per request of one server configuration (printed with its context)."""
    port_file = work / f"serve-{workers}-{len(list(work.glob('serve-*')))}.port"
    cmd = [sys.executable, "-m", "modelloop", "serve", "--model", f"{sf.NUMERIC_MODEL}/{version}",
           "--workers", str(workers), "--port", "0", "--metrics-port", "0", "--port-file", str(port_file),
           "--tracking-uri", tracking_uri, "--prediction-log-url", "none",
           "--log-level", "WARNING"]  # fmt: skip
    proc = sv._spawn(cmd, {**env, "MLFLOW_TRACKING_URI": tracking_uri})
    try:
        sv._wait(lambda: json.loads(port_file.read_text())["grpc"], 180, f"serve --workers {workers}", proc)
        ports = json.loads(port_file.read_text())
        target = f"127.0.0.1:{ports['grpc']}"
        sf.check_answers(target, form, expected)
        load1 = os.getloadavg()[0]
        m = _measure(sv, proc, ports, work, workers)
        processes = 1 + len(_children(proc.pid))
        sf.check_answers(target, form, expected)
        per_request = m["cpu"] * 1000 / m["calls"]
        print(f"  --workers {workers}: {per_request:.3f} ms CPU/request ({m['cpu']:.1f} s over "
              f"{m['calls']:.0f} calls), {m['rows_per_batch']:.1f} rows/batch, {m['rps']:.0f} req/s, "
              f"load1 {load1:.2f}, {processes} processes", flush=True)  # fmt: skip
        return per_request
    finally:
        sv._stop(proc)


def main() -> int:
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    here = Path(__file__).resolve().parent
    root = here.parent
    for folder in (root, here):
        if str(folder) not in sys.path:
            sys.path.insert(0, str(folder))
    for tool in ("h2load", "taskset"):
        if shutil.which(tool) is None:
            print(f"bench/serving_workers: {tool} not found", file=sys.stderr)
            return 1
    import _serving_forms as sf
    import mlflow
    import numpy as np
    import serving as sv

    sv.SERVER_CPU = os.environ.get("BENCH_SERVER_CPUS", "0,1")

    from modelloop.client import build_request
    from modelloop.deploy.mlflow_server import MlflowServer
    from tests.models import register_reference_model

    work = Path(tempfile.mkdtemp(prefix="modelloop-bench-workers-"))
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = {**os.environ, "PYTHONPATH": str(root), "PATH": path}
    print(f"workload: reference model, client form, {sv.CONCURRENCY} concurrent single-row calls, "
          f"{sv.DURATION} s a point after {sv.WARMUP_S} s; server on cores {sv.SERVER_CPU}, h2load on core "
          f"{sv.LOADGEN_CPU}; {ROUNDS} rounds of --workers 1 and 2", flush=True)  # fmt: skip
    mlflow_server = MlflowServer(work / "mlflow")
    mlflow_server.start(timeout=180)
    results: dict[int, list[float]] = {1: [], 2: []}
    try:
        reg = register_reference_model(mlflow_server.url, sf.NUMERIC_MODEL, max_iter=100)
        row = reg.features.head(1)
        form = sf.Form(sf.COLUMNS_RAW, "client", sf.NUMERIC_MODEL, build_request(sf.NUMERIC_MODEL, row), row)
        (work / "body.bin").write_bytes(form.body())
        mlflow.set_tracking_uri(mlflow_server.url)
        expected = np.asarray(
            mlflow.sklearn.load_model(f"models:/{sf.NUMERIC_MODEL}/{reg.version}").predict(row)
        )
        for _ in range(ROUNDS):
            for workers in (1, 2):
                cpu = _point(sv, sf, form, expected, env, work, workers, mlflow_server.url, reg.version)
                results[workers].append(cpu)
    finally:
        mlflow_server.stop()
        shutil.rmtree(work, ignore_errors=True)
    one, two = statistics.median(results[1]), statistics.median(results[2])
    ratio = two / one
    print(f"\nCPU per request, median of {ROUNDS}: --workers 1 {one:.3f} ms, --workers 2 {two:.3f} ms; "
          f"ratio {ratio:.3f} (target <= {TARGET:.2f}: {'PASS' if ratio <= TARGET else 'MISS'})")  # fmt: skip
    print(
        "  note: both configurations on the same cores with the same load; CPU time from /proc, so the "
        "shared machine's other work shows as noise in throughput, less in CPU per request"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
