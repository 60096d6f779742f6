"""CPU time per request of `modelloop serve --workers 2` against `--workers 1` at saturation (issue 14).

Workload: the reference model (breast-cancer, StandardScaler + 100-tree HistGradientBoosting, registered in a
real MLflow server), the client's request form (30 `[1]` FP64 tensors, raw contents; `_serving_forms`),
single-row calls at 64 concurrent from h2load (`bench/serving.py`'s driver, h2load on core 1), the server on
the cores `BENCH_SERVER_CPUS` names (default `0,1`: both, as a 2-CPU pod, whose default worker count is 2;
`0` puts both configurations on one core). Both configurations get the same cores and the same load.
`BENCH_DURATION` seconds a point (default 10) after a `BENCH_WARMUP` s warm-up; `BENCH_ROUNDS` alternating
rounds (default 2); `BENCH_SERVE_ARGS`: extra `modelloop serve` flags for every point (diagnosis only).

Measured: the CPU time (utime + stime in `/proc/<pid>/stat`) of the server's processes (the supervisor and
every worker: the process and its children), and the calls it answered (its own `requests_total` counter,
every gRPC status), both read just before and just after each point, and the rows per predict call (its
batch-size histogram: the model's fixed cost per call is shared by fewer requests when the same load is
split over two batchers). CPU time per request is their ratio; wall-clock throughput is printed only as
context (the machine is shared). Before and after each point a real
gRPC client checks the answer is the model's own. Prints the ratio N=2 / N=1 against the target (within 10 %).

Where the difference goes, printed beside it: each point's CPU by process (supervisor, each worker,
multiprocessing's resource tracker: the 4th process, started by the spawn start method) and by thread (from
`/proc/<pid>/task/*/schedstat`, nanoseconds), under load and over `IDLE_S` seconds without a call (pollers
and timers, which cost per process, not per request); the model's own CPU per request at each point's rows
per batch (in this process: the part of the gap that two half-size batches cost, intrinsic to two batchers);
and a third point, one worker alone at half the calls in flight (each of two workers' share): what a process
costs per request at that load with no second process, so `--workers 2` against it is what running two
processes adds.

Run: `python bench/run.py serving_workers` (about 3 minutes at the default duration).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "2"))
#: target (issue 14): CPU per request with 2 workers within 10 % of one worker's
TARGET = 1.10
#: extra `modelloop serve` flags for both configurations (diagnosis: e.g. a batcher setting), none by default
EXTRA_ARGS = os.environ.get("BENCH_SERVE_ARGS", "").split()
#: seconds each server is watched without a call (what pollers and timers cost)
IDLE_S = 3.0


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


def _tree(pid: int) -> list[int]:
    """`pid` and every descendant."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(_children(p))
    return out


def _ticks(stat_path: Path) -> tuple[str, int]:
    """(name, utime + stime ticks) from a /proc stat file."""
    text = stat_path.read_text()
    name = text[text.index("(") + 1 : text.rindex(")")]
    fields = text.rsplit(")", 1)[1].split()
    return name, int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of the whole line)


def _role(pid: int, root: int, workers: int) -> str:
    """What a server process is: the supervisor, a worker, multiprocessing's resource tracker, ..."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return "gone"
    if pid == root:
        return "server" if workers == 1 else "supervisor"
    if "resource_tracker" in cmdline:
        return "resource tracker"
    if "multiprocessing" in cmdline or "spawn_main" in cmdline:
        return "worker"
    return cmdline.split(" ", 1)[0].rsplit("/", 1)[-1] or "child"


def _snapshot(root: int, workers: int) -> dict[tuple[int, str, str], int]:
    """CPU nanoseconds (the scheduler's own accounting, `schedstat`: finer than the 10 ms ticks of `stat`,
    so a thread's idle wake-ups show) by (pid, process role, thread name) of every thread of the server's
    process tree."""
    out: dict[tuple[int, str, str], int] = {}
    for pid in _tree(root):
        role = _role(pid, root, workers)
        try:
            tasks = list(Path(f"/proc/{pid}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                name = _ticks(task / "stat")[0]
                ticks = int((task / "schedstat").read_text().split()[0])
            except (OSError, ValueError):
                continue
            if int(task.name) == pid:
                name = "main"
            elif name.startswith("python"):  # a Python thread (3.11 does not name them): by its id
                name = f"py-{task.name}"
            key = (pid, role, name)
            out[key] = out.get(key, 0) + ticks
    return out


def _delta(
    before: dict[tuple[int, str, str], int], after: dict[tuple[int, str, str], int]
) -> dict[tuple[int, str, str], float]:
    """Seconds of CPU by (pid, role, thread name) between two snapshots (a thread gone meanwhile: dropped)."""
    return {k: (v - before.get(k, 0)) / 1e9 for k, v in after.items()}


def _cpu_seconds(pid: int) -> float:
    """utime + stime of `pid` and its live children, in seconds."""
    ticks = 0
    for p in [pid, *_children(pid)]:
        try:
            ticks += _ticks(Path(f"/proc/{p}/stat"))[1]
        except OSError:
            continue
    return ticks / os.sysconf("SC_CLK_TCK")


def _breakdown(spent: dict[tuple[int, str, str], float], per: float, unit: str) -> list[str]:
    """Lines: CPU by process (pid, role), each with its busiest threads, in `unit` (`per` divides seconds)."""
    by_process: dict[tuple[int, str], dict[str, float]] = {}
    for (pid, role, thread), seconds in spent.items():
        by_process.setdefault((pid, role), {})
        by_process[(pid, role)][thread] = by_process[(pid, role)].get(thread, 0.0) + seconds
    lines = []
    for (pid, role), threads in sorted(by_process.items(), key=lambda kv: -sum(kv[1].values())):
        top = sorted(threads.items(), key=lambda kv: -kv[1])
        shown = ", ".join(f"{name} {seconds * 1000 / per:.3f}" for name, seconds in top[:5] if seconds > 0)
        rest = sum(seconds for _, seconds in top[5:])
        if rest > 0:
            shown += f", {len(top) - 5} more {rest * 1000 / per:.3f}"
        total = sum(threads.values()) * 1000 / per
        lines.append(
            f"      {role} (pid {pid}, {len(threads)} threads): {total:.3f} {unit} [{shown or 'idle'}]"
        )
    return lines


def _batches(sv: Any, metrics_port: int) -> tuple[float, float]:
    """(rows, predict calls) so far, from the server's batch-size histogram."""
    rows = calls = 0.0
    for line in sv._scrape(metrics_port).splitlines():
        if line.startswith("modelloop_serving_batch_size_sum"):
            rows += float(line.rsplit(" ", 1)[1])
        elif line.startswith("modelloop_serving_batch_size_count"):
            calls += float(line.rsplit(" ", 1)[1])
    return rows, calls


def _measure(
    sv: Any, proc: Any, ports: dict[str, int], work: Path, workers: int, concurrency: int
) -> dict[str, Any]:
    """One h2load point; the server's CPU seconds (in all, and by process and thread), calls and batches
    over it (read just around it)."""
    before, batches = sv._calls_by_code(ports["metrics"]), _batches(sv, ports["metrics"])
    threads = _snapshot(proc.pid, workers)
    cpu = _cpu_seconds(proc.pid)
    url = f"http://127.0.0.1:{ports['grpc']}/inference.GRPCInferenceService/ModelInfer"
    rps, _, _, failed = sv._h2load(url, work / "body.bin", concurrency, grpc=True, work=work)
    cpu = _cpu_seconds(proc.pid) - cpu
    spent = _delta(threads, _snapshot(proc.pid, workers))
    after, batches_after = sv._calls_by_code(ports["metrics"]), _batches(sv, ports["metrics"])
    calls = sum(after.values()) - sum(before.values())
    bad = sum(after.get(k, 0) - before.get(k, 0) for k in after if k not in ("OK", "CANCELLED"))
    if calls <= 0 or bad or failed > sv.CONCURRENCY:
        raise RuntimeError(f"--workers {workers}: {calls:.0f} calls, {bad:.0f} gRPC errors, {failed} failed")
    rows, predicts = (a - b for a, b in zip(batches_after, batches, strict=True))
    return {"cpu": cpu, "calls": calls, "rps": rps, "rows_per_batch": rows / max(predicts, 1.0),
            "spent": spent}  # fmt: skip


def _idle(proc: Any, workers: int) -> dict[tuple[int, str, str], float]:
    """CPU seconds by process and thread over `IDLE_S` seconds without a call (pollers, timers)."""
    before = _snapshot(proc.pid, workers)
    time.sleep(IDLE_S)
    return _delta(before, _snapshot(proc.pid, workers))


def _label(workers: int, concurrency: int, sv: Any) -> str:
    return f"--workers {workers}" + ("" if concurrency == sv.CONCURRENCY else f" at {concurrency} in flight")


def _by_role(spent: dict[tuple[int, str, str], float]) -> dict[str, float]:
    out: dict[str, float] = {}
    for (_, role, _), seconds in spent.items():
        out[role] = out.get(role, 0.0) + seconds
    return out


def _point(sv: Any, sf: Any, form: Any, expected: Any, env: dict[str, str], work: Path, workers: int,
           tracking_uri: str, version: str, concurrency: int) -> dict[str, Any]:  # fmt: skip
    """CPU ms per request of one server configuration at `concurrency` calls in flight, by process role too
    (printed with its context)."""
    port_file = work / f"serve-{workers}-{len(list(work.glob('serve-*')))}.port"
    cmd = [sys.executable, "-m", "modelloop", "serve", "--model", f"{sf.NUMERIC_MODEL}/{version}",
           "--workers", str(workers), "--port", "0", "--metrics-port", "0", "--port-file", str(port_file),
           "--tracking-uri", tracking_uri, "--prediction-log-url", "none",
           "--log-level", "WARNING", *EXTRA_ARGS]  # fmt: skip
    proc = sv._spawn(cmd, {**env, "MLFLOW_TRACKING_URI": tracking_uri})
    try:
        sv._wait(lambda: json.loads(port_file.read_text())["grpc"], 180, f"serve --workers {workers}", proc)
        ports = json.loads(port_file.read_text())
        target = f"127.0.0.1:{ports['grpc']}"
        sf.check_answers(target, form, expected)
        idle = _idle(proc, workers)
        load1 = os.getloadavg()[0]
        m = _measure(sv, proc, ports, work, workers, concurrency)
        processes = 1 + len(_children(proc.pid))
        sf.check_answers(target, form, expected)
        per_request = m["cpu"] * 1000 / m["calls"]
        label = _label(workers, concurrency, sv)
        print(f"  {label}: {per_request:.3f} ms CPU/request ({m['cpu']:.1f} s over "
              f"{m['calls']:.0f} calls), {m['rows_per_batch']:.1f} rows/batch, {m['rps']:.0f} req/s, "
              f"load1 {load1:.2f}, {processes} processes", flush=True)  # fmt: skip
        print("    under load, ms CPU per request by process [its busiest threads]:")
        print("\n".join(_breakdown(m["spent"], m["calls"], "ms/request")))
        print(f"    idle (no call for {IDLE_S:.0f} s), ms CPU per second by process:")
        print("\n".join(_breakdown(idle, IDLE_S, "ms/s")), flush=True)
        roles = {role: s * 1000 / m["calls"] for role, s in _by_role(m["spent"]).items()}
        idle_ms = sum(idle.values()) * 1000 / IDLE_S
        return {"per_request": per_request, "roles": roles, "rows_per_batch": m["rows_per_batch"],
                "idle_ms_per_s": idle_ms, "rps": m["rps"]}  # fmt: skip
    finally:
        sv._stop(proc)


def _model_cost(tracking_uri: str, name: str, version: str, rows: float) -> float:
    """The model's own CPU ms per request (single-row requests) when it predicts `rows` rows a call: its
    fixed cost per call shared by `rows` requests (in this process, the serving predict path)."""
    import numpy as np

    from modelloop.serving.model_host import load_model
    from modelloop.serving.schema import Features

    loaded = load_model(tracking_uri, name, version)
    n = max(1, round(rows))
    features = Features(n, matrix=np.random.default_rng(0).normal(size=(n, len(loaded.schema.columns))))
    for _ in range(20):
        loaded.predict(features)
    calls, spent = 0, 0.0
    while spent < 2.0:
        t = time.thread_time()
        for _ in range(50):
            loaded.predict(features)
        spent += time.thread_time() - t
        calls += 50
    return spent * 1000 / calls / n


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
    # (workers, calls in flight): the two compared, and one worker alone at the share of the load each of
    # two workers gets (what a worker costs per request at that load, with no second process at all)
    configs = [(1, sv.CONCURRENCY), (2, sv.CONCURRENCY), (1, sv.CONCURRENCY // 2)]
    results: dict[tuple[int, int], list[dict[str, Any]]] = {c: [] for c in configs}
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
            for workers, concurrency in configs:
                point = _point(sv, sf, form, expected, env, work, workers, mlflow_server.url, reg.version,
                               concurrency)  # fmt: skip
                results[(workers, concurrency)].append(point)
        rows = {c: statistics.median(p["rows_per_batch"] for p in results[c]) for c in configs}
        model = {c: _model_cost(mlflow_server.url, sf.NUMERIC_MODEL, reg.version, rows[c]) for c in configs}
    finally:
        mlflow_server.stop()
        shutil.rmtree(work, ignore_errors=True)
    median = {c: statistics.median(p["per_request"] for p in results[c]) for c in configs}
    one, two, half = (median[c] for c in configs)
    ratio = two / one
    print(f"\nCPU per request, median of {ROUNDS}: --workers 1 {one:.3f} ms, --workers 2 {two:.3f} ms; "
          f"ratio {ratio:.3f} (target <= {TARGET:.2f}: {'PASS' if ratio <= TARGET else 'MISS'})")  # fmt: skip
    for c in configs:
        roles = sorted({r for p in results[c] for r in p["roles"]})
        shares = ", ".join(
            f"{r} {statistics.median(p['roles'].get(r, 0.0) for p in results[c]):.3f}" for r in roles
        )
        idle = statistics.median(p["idle_ms_per_s"] for p in results[c])
        rps = statistics.median(p["rps"] for p in results[c])
        print(f"  {_label(*c, sv)}: {median[c]:.3f} ms CPU/request ({shares}), {rows[c]:.1f} rows/batch, "
              f"{rps:.0f} req/s; idle {idle:.2f} ms CPU/s")  # fmt: skip
    gap = two - one
    intrinsic = model[configs[1]] - model[configs[0]]
    print(
        f"  the model's own CPU per request at those batch sizes (in-process): {model[configs[0]]:.3f} ms at "
        f"{rows[configs[0]]:.1f} rows/batch, {model[configs[1]]:.3f} ms at {rows[configs[1]]:.1f}: "
        f"{intrinsic:.3f} ms of the {gap:.3f} ms gap is the same load split over two batchers; "
        f"ratio without it {(two - intrinsic) / one:.3f}"
    )
    print(
        f"  one worker alone at {configs[2][1]} in flight (each worker's share): {half:.3f} ms, "
        f"{half / one:.3f} x --workers 1 at {configs[0][1]}: what a process costs per request at half the "
        f"load, with no second process; --workers 2 against it: {two / half:.3f}"
    )
    print(
        "  note: both configurations on the same cores with the same load; CPU time from /proc, so the "
        "shared machine's other work shows as noise in throughput, less in CPU per request"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
