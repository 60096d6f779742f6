"""Batch scoring (`modelloop score`) against the model's own `predict_proba` and MLflow's pyfunc, one core.

Workload: 1,000,000 rows x 30 features (breast-cancer rows resampled, 5 % noise) of the reference model
(`tests.models.register_reference_model`, StandardScaler + 100-tree HGB, as bench/serving.py registers it),
in a Parquet file of 8 row groups. Measured in the same run, with OMP_NUM_THREADS=1 and the process pinned to
one core:

- anchor: the model's own `predict_proba` on the whole in-memory DataFrame (no I/O at all);
- `modelloop score` in-process (`score_batch`, the model loaded beforehand): Parquet read, validation,
  prediction and Parquet write included; target >= 0.8 of the anchor;
- `mlflow.pyfunc.load_model(...).predict` on pandas chunks of 100,000 rows (in memory, no I/O);
- the command itself (`modelloop score --memory-budget 1G`) in a child process: wall time and peak RSS
  against the budget;
- `modelloop score --shards 2`, the command that starts both shards as local processes itself (on cores
  0-1), against one process: wall time;
- two child processes scoring a shard each on two cores against one scoring the whole file (target >= 1.7x),
  each child measured on its own: wall time, CPU time (user + sys), the time inside `score_batch` (model load
  and scoring, from its summary) and the start-up before it (interpreter, imports), so a shortfall shows
  whether the shards split the work (CPU time halves) and where the wall time goes. The MLflow server is
  started before this process pins itself to core 0, so it does not share shard 0's core by inheritance.
  `REPEATS` rounds, medians reported. The machine may be shared, so the ratio is also given by CPU time
  (one process's CPU over the slower shard's: the wall ratio two idle cores would give);
- the fixed cost of a process: the same command on a 1,000-row file of the same columns (interpreter,
  imports, model load, drift), its CPU time F; the rest of the 1-process CPU time is the part proportional
  to the rows, P; two shards cannot beat (F + P) / (F + P / 2), which the bench prints beside the target;
- the floor under F: a process that only imports the libraries a shard cannot do without (numpy, pandas,
  pyarrow to read the file, scikit-learn to run the model; then also MLflow, whose client finds the version
  in the registry), and nothing of modelloop or skops: the same bound with that floor in place of F is what
  two shards of this workload could reach if everything else a shard does at start were free.

Prints the figures and ratios; fails only when a component cannot run.
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROWS = 1_000_000
CHUNK = 100_000
BUDGET = "1G"
BUDGET_BYTES = 1 << 30
MODEL = "bench-batch"
REPEATS = 3
TARGET = 1.7  # 2 shards / 1
FIXED_ROWS = 1_000
#: what a shard cannot avoid importing: the file's reader and the model's library; then MLflow's client
FLOORS = {
    "numpy, pandas, pyarrow, scikit-learn": "import numpy, pandas, pyarrow.parquet, sklearn.pipeline, "
    "sklearn.preprocessing, sklearn.ensemble",
    "the same + mlflow": "import numpy, pandas, pyarrow.parquet, sklearn.pipeline, sklearn.preprocessing, "
    "sklearn.ensemble, mlflow",
}


def _rows(features: Any) -> Any:
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    picked = features.iloc[rng.integers(0, len(features), ROWS)].reset_index(drop=True)
    noise = rng.normal(0.0, 0.05, picked.shape) * features.std().to_numpy()
    frame = pd.DataFrame(picked.to_numpy() + noise, columns=features.columns)
    frame.insert(0, "customer_id", np.arange(ROWS, dtype=np.int64))
    return frame


@dataclass(frozen=True)
class Child:
    """One finished `modelloop score` process, as GNU time and its summary saw it."""

    wall: float  # seconds, start to exit
    cpu: float  # user + sys seconds
    rss: int  # peak resident bytes
    scoring: float  # seconds inside score_batch: model load + scoring (the summary's "in X s")

    @property
    def startup(self) -> float:
        """Seconds before score_batch: interpreter, imports, argument checks."""
        return self.wall - self.scoring

    def line(self, label: str, *, parts: bool = True) -> str:
        """The figures in a line; `parts=False` leaves out start-up and scoring (a command running shards
        in processes of its own: its summary lines are the shards')."""
        cpu = f"{self.cpu:>6.1f} s CPU" + ("" if parts else " (all its processes)")
        split = f"{self.startup:>5.1f} s start-up, {self.scoring:>6.1f} s load + scoring, " if parts else ""
        return f"{label:<34} {self.wall:>6.1f} s wall, {cpu}, {split}{self.rss / 2**20:>5.0f} MiB peak"


def _spawn(env: dict[str, str], core: str, args: list[str]) -> subprocess.Popen[str]:
    """`modelloop score ARGS` pinned to `core`, under GNU time (its last stderr line: wall, user, sys seconds
    and peak RSS in KiB)."""
    cmd = ["/usr/bin/time", "-f", "%e %U %S %M", "taskset", "-c", core, sys.executable, "-m", "modelloop",
           "score", "--quiet", *args]  # fmt: skip
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen[str]) -> Child:
    """The figures of a finished command; RuntimeError when it failed."""
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"modelloop score failed ({proc.returncode}): {err.strip()[-400:]}")
    wall, user, system, rss_kib = err.strip().splitlines()[-1].split()
    found = re.search(r"in ([0-9.]+) s", out)
    scoring = float(found.group(1)) if found else float("nan")
    return Child(float(wall), float(user) + float(system), int(rss_kib) * 1024, scoring)


def main() -> int:
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    root = Path(__file__).resolve().parent.parent
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    if shutil.which("taskset") is None or not Path("/usr/bin/time").exists() or (os.cpu_count() or 1) < 2:
        print("bench/scoring: needs taskset, /usr/bin/time and 2 cores", file=sys.stderr)
        return 1
    from modelloop.deploy.mlflow_server import MlflowServer
    from tests.models import register_reference_model

    work = Path(tempfile.mkdtemp(prefix="modelloop-bench-scoring-"))
    server = MlflowServer(work / "mlflow")
    server.start(timeout=180)  # before pinning: the server must not inherit core 0 only
    os.sched_setaffinity(0, {0})
    try:
        reg = register_reference_model(server.url, MODEL, max_iter=100)
        return _measure(work, root, server.url, reg)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


def _measure(work: Path, root: Path, tracking_uri: str, reg: Any) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    frame = _rows(reg.features)
    path = work / "rows.parquet"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, row_group_size=ROWS // 8)
    features = frame.drop(columns=["customer_id"])
    del frame
    print(f"workload: {ROWS:,} rows x {features.shape[1]} features, reference model v{reg.version}, one core")
    own, ours, pyfunc = _in_process(work, path, features, tracking_uri, reg.version)
    del features
    lines = [
        f"model's own predict_proba (in memory):          {own:>12,.0f} rows/s",
        f"modelloop score in-process (Parquet in + out):  {ours:>12,.0f} rows/s, "
        f"{ours / own:.2f} of predict_proba (target >= 0.8)",
        f"mlflow pyfunc predict on 100k pandas chunks:    {pyfunc:>12,.0f} rows/s, "
        f"ours / pyfunc {ours / pyfunc:.2f}",
    ]
    print("\n".join(lines), flush=True)
    small = work / "small.parquet"
    pq.write_table(pq.read_table(path).slice(0, FIXED_ROWS), small)
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    base = ["--model", f"{MODEL}/{reg.version}", "--key", "customer_id",
            "--memory-budget", BUDGET, "--tracking-uri", tracking_uri, "--no-record"]  # fmt: skip
    rounds = [_round(env, base, work, path, small, r) for r in range(REPEATS)]
    med = statistics.median
    one_cpu, fixed = med(r.one.cpu for r in rounds), med(r.fixed.cpu for r in rounds)
    rss = max(r.one.rss for r in rounds)
    per_rows = one_cpu - fixed
    ceiling = (fixed + per_rows) / (fixed + per_rows / 2)
    needed = per_rows * (1 - TARGET / 2) / (TARGET - 1)  # the F at which the ceiling is TARGET
    lines = [
        f"medians of {REPEATS} rounds:",
        f"peak RSS of the command: {rss / 2**20:.0f} MiB "
        f"({'within' if rss <= BUDGET_BYTES else 'over'} the {BUDGET} budget)",
        f"CPU time of the 2 shards / 1 process: {med(r.cpu_share for r in rounds):.2f} "
        f"(with only the fixed cost repeated: (2F + P) / (F + P) = {(2 * fixed + per_rows) / one_cpu:.2f})",
        f"2 shards / 1: {med(r.wall_ratio for r in rounds):.2f}x wall, "
        f"{med(r.scoring_ratio for r in rounds):.2f}x load + scoring, "
        f"{med(r.cpu_ratio for r in rounds):.2f}x by CPU time (target >= {TARGET})",
        f"`modelloop score --shards 2` (one command starting both shards) / 1 process: "
        f"{med(r.local_ratio for r in rounds):.2f}x wall",
        f"fixed cost F of a process (a {FIXED_ROWS:,}-row file): {fixed:.2f} s CPU; proportional to the rows "
        f"P: {per_rows:.2f} s CPU per {ROWS:,}; so 2 shards / 1 <= (F + P) / (F + P/2) = {ceiling:.2f}x "
        f"({TARGET}x needs F <= {needed:.2f} s)",
    ]
    for label, floor in _floors(env).items():
        bound = (floor + per_rows) / (floor + per_rows / 2)
        lines.append(
            f"floor under F: a process importing only {label}: {floor:.2f} s CPU; with all else free, "
            f"2 shards / 1 <= {bound:.2f}x"
        )
    print("\n".join(lines))
    return 0


def _floors(env: dict[str, str]) -> dict[str, float]:
    """CPU seconds (user + sys, median of REPEATS) of a process on core 0 that only runs each of FLOORS."""
    found: dict[str, float] = {}
    for label, code in FLOORS.items():
        cpu: list[float] = []
        for _ in range(REPEATS):
            cmd = ["/usr/bin/time", "-f", "%U %S", "taskset", "-c", "0", sys.executable, "-c", code]
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
            user, system = done.stderr.strip().splitlines()[-1].split()
            cpu.append(float(user) + float(system))
        found[label] = statistics.median(cpu)
    return found


@dataclass(frozen=True)
class Round:
    """One process on the whole file, two shards on two cores, one process on the small file."""

    one: Child
    two: list[Child]
    fixed: Child
    wall1: float
    wall2: float
    local: Child  # `modelloop score --shards 2`: the command starting both shards itself

    @property
    def local_ratio(self) -> float:
        return self.one.wall / self.local.wall

    @property
    def cpu_share(self) -> float:
        return sum(c.cpu for c in self.two) / self.one.cpu

    @property
    def wall_ratio(self) -> float:
        return self.wall1 / self.wall2

    @property
    def scoring_ratio(self) -> float:
        return self.one.scoring / max(c.scoring for c in self.two)

    @property
    def cpu_ratio(self) -> float:
        return self.one.cpu / max(c.cpu for c in self.two)


def _round(env: dict[str, str], base: list[str], work: Path, path: Path, small: Path, r: int) -> Round:
    started = time.perf_counter()
    whole = [*base, "--input", str(path), "--output", str(work / "out1"), "--batch-id", "one"]
    one = _finish(_spawn(env, "0", whole))
    wall1 = time.perf_counter() - started
    started = time.perf_counter()
    shards = ["--input", str(path), "--output", str(work / "out2"), "--batch-id", "two", "--shards", "2"]
    procs = [_spawn(env, str(i), [*base, *shards, "--shard-index", str(i)]) for i in range(2)]
    two = [_finish(p) for p in procs]
    wall2 = time.perf_counter() - started
    fixed = _finish(_spawn(env, "0", [*base, "--input", str(small), "--output", str(work / "out3")]))
    whole2 = ["--input", str(path), "--output", str(work / "out4"), "--batch-id", "local", "--shards", "2"]
    local = _finish(_spawn(env, "0,1", [*base, *whole2]))
    done = Round(one, two, fixed, wall1, wall2, local)
    lines = [
        f"round {r + 1}: 2 shards / 1: {done.wall_ratio:.2f}x wall, {done.cpu_ratio:.2f}x by CPU time; "
        f"the --shards 2 command / 1: {done.local_ratio:.2f}x wall",
        one.line("  1 process, whole file, core 0:"),
        *(c.line(f"  shard {i} of 2, core {i}:") for i, c in enumerate(two)),
        fixed.line(f"  1 process, {FIXED_ROWS:,} rows, core 0:"),
        local.line("  --shards 2 command, cores 0-1:", parts=False),
    ]
    print("\n".join(lines), flush=True)
    return done


def _in_process(work: Path, path: Path, features: Any, tracking_uri: str, version: str) -> tuple[float, ...]:
    """Rows/s of the model's own predict_proba, of `score_batch` (model loaded beforehand) and of pyfunc."""
    import mlflow

    from modelloop.batch import BatchJob, Shard, score_batch
    from modelloop.batch.scoring import chunk_rows_for, resident_bytes
    from modelloop.batch.sinks import ParquetSink
    from modelloop.batch.sources import ParquetSource
    from modelloop.serving.model_host import load_model

    mlflow.set_tracking_uri(tracking_uri)
    pipe = mlflow.sklearn.load_model(f"models:/{MODEL}/{version}")
    started = time.perf_counter()
    pipe.predict_proba(features)
    own = ROWS / (time.perf_counter() - started)
    model = load_model(tracking_uri, MODEL, version, max_rows=chunk_rows_for(BUDGET_BYTES, 31))
    # in-process the bench's own data counts against the budget: give the job what the command would have
    job = BatchJob(
        model=f"{MODEL}/{version}", tracking_uri=tracking_uri, source=ParquetSource(path),
        sink=ParquetSink(work / "out-inproc", "bench", Shard()), batch_id="bench", keys=("customer_id",),
        memory_budget=BUDGET_BYTES + resident_bytes(), progress=False, loader=lambda *a, **k: model,
    )  # fmt: skip
    started = time.perf_counter()
    result = score_batch(job)
    ours = ROWS / (time.perf_counter() - started)
    assert result.scored == ROWS, result.summary()
    pyfunc = mlflow.pyfunc.load_model(f"models:/{MODEL}/{version}")
    started = time.perf_counter()
    for start in range(0, ROWS, CHUNK):
        pyfunc.predict(features.iloc[start : start + CHUNK])
    return own, ours, ROWS / (time.perf_counter() - started)


if __name__ == "__main__":
    raise SystemExit(main())
