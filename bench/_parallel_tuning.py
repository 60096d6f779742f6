"""Parallel tuning (issue 18), the second part of bench/training.py: 1 vs 2 local workers on the demo config.

Workload (from the issue, not changed here): the demo config (`examples/demo.yaml`: logistic regression tuned
for ROC AUC, on the demo's breast-cancer CSV) with 40 trials, trained by `run_training` with `study.workers`
1 and then 2 (this process tunes, plus one worker process, on a journal file), against a real `mlflow
server`, alternating 1 and 2 for `ROUNDS` rounds. Prints, as medians over the rounds:

- the same with 2 workers the way they ran before the coordinator tuned too (both in worker processes, the
  coordinator waiting for each to exit): the "2, processes only" row, for comparison;
- the wall time of each whole training (setup, tuning, writing the trial runs, the finishing step) and the
  ratio 1/2 workers against the target (at least 1.7x on two cores);
- CPU seconds: this process (the coordinator, which tunes too), the worker processes, the MLflow server;
- the tuning span (first trial start to last trial end) and who ran the trials;
- the start-up of one worker process (`modelloop train --tune-only` on a full study: imports, data, study,
  MLflow connection; nothing to tune) and its share of the 1-worker training;
- the serial fraction of the 1-worker training (everything but the tuning span) and the best ratio two
  workers could reach (Amdahl, and with the second worker's start-up);
- the MLflow bookkeeping per trial with 1 and 2 writers at once (`ClientTrialSink` and the parent run's
  progress metric, as a worker writes them on an MLflow server): wall ms per trial and server CPU per trial.

Run: `python bench/training.py --workers-only` (or as part of `make bench`).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

TRIALS = 40
ROUNDS = 3
TARGET = 1.7
WRITER_TRIALS = 20
ONE, TWO, OLD = "1", "2", "2, processes only"  # trial runs each writer records in the bookkeeping part


@dataclass(frozen=True)
class Training:
    wall: float
    span: float
    cpu_here: float  # this process: the coordinator (it tunes too) and its recorder threads
    cpu_workers: float  # worker processes (reaped children)
    cpu_server: float  # the MLflow server's processes
    by_worker: dict[str, int]  # trials per worker: "here" or "process"


def _process_tree_cpu(root: int) -> float:
    """CPU seconds so far of `root` and its live descendants (from /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(entry.name)
        parents[pid] = int(fields[1])
        times[pid] = (int(fields[11]) + int(fields[12])) / tick
    tree, grew = {root}, True
    while grew:
        more = {pid for pid, parent in parents.items() if parent in tree} - tree
        grew = bool(more)
        tree |= more
    return sum(times.get(pid, 0.0) for pid in tree)


def _children_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _demo_config(folder: Path, workers: int, round_no: int) -> Any:
    from modelloop.cli.demo_data import load_dataset
    from modelloop.training.config import load_config

    csv = folder / "demo.csv"
    if not csv.exists():
        load_dataset().to_csv(csv, index=False)
    examples = Path(__file__).resolve().parent.parent / "examples" / "demo.yaml"
    storage = f"journal:///{folder / f'study-{workers}-{round_no}.log'}"
    return load_config(
        examples,
        [
            f"dataset.path={csv}",
            f"study.n_trials={TRIALS}",
            f"study.workers={workers}",
            f"study.storage={storage}",
            f"model_name=bench-workers-{workers}-{round_no}",
            "promotion.policy=manual",
            "promotion.alias=null",
        ],
    )


@contextmanager
def _processes_only() -> Iterator[None]:
    """`run_workers` without `tune_here`: every trial in worker processes, the coordinator only watching."""
    from modelloop.training import workers

    real = workers.run_workers

    def run_workers(*args: Any, **kwargs: Any) -> None:
        kwargs.pop("tune_here", None)
        real(*args, **kwargs)

    workers.run_workers = run_workers
    try:
        yield
    finally:
        workers.run_workers = real


def _one_training(uri: str, server_pid: int, folder: Path, variant: str, round_no: int) -> Training:
    from mlflow import MlflowClient

    from modelloop.training import run_training
    from modelloop.training.study import open_storage, worker_id
    from modelloop.training.trial_runs import WORKER_ATTR

    workers = 1 if variant == ONE else 2
    config = _demo_config(folder, workers, round_no if variant != OLD else 100 + round_no)
    server0, children0, here0 = _process_tree_cpu(server_pid), _children_cpu(), time.process_time()
    start = time.perf_counter()
    with _processes_only() if variant == OLD else nullcontext():
        result = run_training(config, tracking_uri=uri)
    wall = time.perf_counter() - start
    cpu_here, cpu_workers = time.process_time() - here0, _children_cpu() - children0
    cpu_server = _process_tree_cpu(server_pid) - server0
    storage = open_storage(config.study.storage)
    assert storage is not None and result.experiment_id is not None
    study = optuna.load_study(study_name=config.study_name, storage=storage)
    trials = study.get_trials(deepcopy=False)
    done = [t for t in trials if t.state.is_finished()]
    nested = MlflowClient(uri).search_runs(
        [result.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{result.run_id}'", max_results=1000
    )
    if len(nested) != len(trials) or len(done) != TRIALS or result.version is None:
        raise RuntimeError(f"{workers} workers: {len(done)} trials, {len(nested)} nested runs")
    starts = [t.datetime_start for t in done if t.datetime_start]
    ends = [t.datetime_complete for t in done if t.datetime_complete]
    by_worker: dict[str, int] = {}
    for t in done:
        who = "here" if t.user_attrs.get(WORKER_ATTR) == worker_id() else "process"
        by_worker[who] = by_worker.get(who, 0) + 1
    span = (max(ends) - min(starts)).total_seconds()
    return Training(wall, span, cpu_here, cpu_workers, cpu_server, by_worker)


def _worker_startup(uri: str, folder: Path) -> tuple[float, float]:
    """(wall, CPU) seconds of one `modelloop train --tune-only` on a full study: its start-up and exit."""
    from modelloop.training.config import dump_config
    from modelloop.training.workers import worker_config

    config = _demo_config(folder, 2, 1)  # the study of round 1 with 2 workers: full
    path = folder / "worker.yaml"
    path.write_text(dump_config(worker_config(config, config.study.storage)), encoding="utf-8")
    argv = [sys.executable, "-m", "modelloop", "train", "--config", str(path), "--tracking-uri", uri]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cpu0, start = _children_cpu(), time.perf_counter()
    subprocess.run([*argv, "--tune-only", "--quiet"], env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start, _children_cpu() - cpu0


def _writer(uri: str, experiment: str, parent: str, barrier: Any, results: Any) -> None:
    """One worker's bookkeeping: `WRITER_TRIALS` trial runs and the parent's progress points, timed."""
    from mlflow import MlflowClient

    from modelloop.training.trial_runs import ClientTrialSink, ParentProgress, TrialRecord

    client = MlflowClient(uri)
    sink = ClientTrialSink(client, experiment_id=experiment, parent_run_id=parent, metric="roc_auc")
    progress = ParentProgress(client, parent)
    now = int(time.time() * 1000)
    records = [
        TrialRecord(
            number=i, state="COMPLETE", params={"C": str(0.1 * (i + 1))}, value=0.9, intermediate={},
            start_ms=now, end_ms=now + 10, worker=f"bench:{os.getpid()}", error=None, done=i + 1,
        )
        for i in range(WRITER_TRIALS)
    ]  # fmt: skip
    client.search_experiments(max_results=1)  # connection and imports outside the timing
    barrier.wait()
    start = time.perf_counter()
    for rec in records:  # one at a time, as trials finish while a worker tunes
        sink.write([rec])
        progress.write([rec])
    results.put(time.perf_counter() - start)


def _bookkeeping(uri: str, server_pid: int, writers: int, round_no: int) -> tuple[float, float]:
    """(wall ms per trial as each writer sees it, server CPU ms per trial) with `writers` at once."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    experiment = client.create_experiment(f"bookkeeping-{writers}-{round_no}")
    parent = client.create_run(experiment).info.run_id
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(writers + 1), ctx.Queue()
    args = (uri, experiment, parent, barrier, results)
    procs = [ctx.Process(target=_writer, args=args) for _ in range(writers)]
    for proc in procs:
        proc.start()
    barrier.wait()
    cpu0 = _process_tree_cpu(server_pid)
    elapsed = [results.get(timeout=600) for _ in procs]
    cpu = _process_tree_cpu(server_pid) - cpu0
    for proc in procs:
        proc.join()
    nested = f"tags.mlflow.parentRunId = '{parent}'"
    written = len(client.search_runs([experiment], filter_string=nested, max_results=1000))
    if written != writers * WRITER_TRIALS:
        raise RuntimeError(f"bookkeeping: {written} of {writers * WRITER_TRIALS} trial runs written")
    return statistics.median(elapsed) / WRITER_TRIALS * 1000, cpu / (writers * WRITER_TRIALS) * 1000


def _med(values: list[float]) -> float:
    return statistics.median(values)


def workers_main() -> int:
    from modelloop.deploy.mlflow_server import MlflowServer

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    runs: dict[str, list[Training]] = {ONE: [], TWO: [], OLD: []}
    with tempfile.TemporaryDirectory(prefix="bench-workers-") as tmp:
        folder = Path(tmp)
        server = MlflowServer(folder / "mlflow")
        server.start(timeout=120)
        assert server._proc is not None
        pid = server._proc.pid
        try:
            for round_no in range(1, ROUNDS + 1):
                for n, done in runs.items():
                    r = _one_training(server.url, pid, folder, n, round_no)
                    done.append(r)
                    print(
                        f"round {round_no}, workers {n}: {r.wall:.2f} s wall, "
                        f"{r.span:.2f} s of trials, trials by {r.by_worker}",
                        flush=True,
                    )
            startup = [_worker_startup(server.url, folder) for _ in range(ROUNDS)]
            books = {k: [_bookkeeping(server.url, pid, k, r) for r in range(ROUNDS)] for k in (1, 2)}
        finally:
            server.stop()
    print(
        f"\ndemo config, {TRIALS} trials, local workers on a journal file, mlflow server; "
        f"{os.cpu_count()} CPUs; medians of {ROUNDS} rounds"
    )
    print(
        f"{'workers':<18} {'wall s':>7} {'span s':>7} {'CPU here':>9} {'CPU workers':>12} {'CPU server':>11} "
        f"{'CPU total':>10}  trials by"
    )
    med: dict[str, dict[str, float]] = {}
    for n, rs in runs.items():
        m = {
            "wall": _med([r.wall for r in rs]),
            "span": _med([r.span for r in rs]),
            "here": _med([r.cpu_here for r in rs]),
            "workers": _med([r.cpu_workers for r in rs]),
            "server": _med([r.cpu_server for r in rs]),
            "total": _med([r.cpu_here + r.cpu_workers + r.cpu_server for r in rs]),
        }
        med[n] = m
        who = " / ".join(", ".join(f"{k} {v}" for k, v in sorted(r.by_worker.items())) for r in rs)
        print(
            f"{n:<18} {m['wall']:>7.2f} {m['span']:>7.2f} {m['here']:>9.2f} {m['workers']:>12.2f} "
            f"{m['server']:>11.2f} {m['total']:>10.2f}  {who}"
        )
    ratio = med[ONE]["wall"] / med[TWO]["wall"]
    print(
        f"wall time ratio 1/2 workers: {ratio:.2f}x (target: at least {TARGET:g}x); "
        f"processes only: {med[ONE]['wall'] / med[OLD]['wall']:.2f}x"
    )
    print(
        f"CPU total ratio 2/1 workers: {med[TWO]['total'] / med[ONE]['total']:.2f}x (1.00x: no work added); "
        f"processes only: {med[OLD]['total'] / med[ONE]['total']:.2f}x"
    )

    up_wall, up_cpu = _med([s[0] for s in startup]), _med([s[1] for s in startup])
    t1, span1 = med[ONE]["wall"], med[ONE]["span"]
    serial = t1 - span1
    amdahl = t1 / (serial + span1 / 2)
    with_startup = t1 / (serial + (span1 if span1 <= up_wall else up_wall + (span1 - up_wall) / 2))
    print(
        f"start-up of one worker process (imports, data, study, MLflow; nothing to tune): "
        f"{up_wall:.2f} s wall, {up_cpu:.2f} s CPU = {up_wall / t1:.0%} of the 1-worker training"
    )
    print(
        f"1-worker training: {span1:.2f} s of trials (the part workers share) in {t1:.2f} s; serial fraction "
        f"{serial / t1:.0%} (setup, writing the trial runs, refit, gate, model logging, registration)"
    )
    print(
        f"best ratio 2 workers can reach: {amdahl:.2f}x with free start-up (Amdahl), "
        f"{with_startup:.2f}x with the second worker's start-up; the {TARGET:g}x target needs at least "
        f"{_needed_span(serial, up_wall):.0f} s of trials (at 1 worker) beside the same serial part"
    )
    print(f"MLflow bookkeeping per trial ({WRITER_TRIALS} trial runs per writer, client sink on the server):")
    for k, rows in books.items():
        wall_ms, cpu_ms = _med([r[0] for r in rows]), _med([r[1] for r in rows])
        who = f"{k} writer{'s' if k > 1 else ' '} at once"
        print(f"  {who}: {wall_ms:6.1f} ms per trial, server CPU {cpu_ms:5.1f} ms per trial")
    return 0 if ratio >= TARGET else 1


def _needed_span(serial: float, startup: float) -> float:
    """Seconds of trials (at 1 worker) for which 2 workers reach the target, given the serial seconds and the
    second worker's start-up: (serial + span) / (serial + startup + (span - startup) / 2) = TARGET."""
    # serial + span = TARGET * (serial + startup / 2 + span / 2)  =>  span (1 - TARGET / 2) = ...
    return (TARGET * (serial + startup / 2) - serial) / (1 - TARGET / 2)


__all__ = ["workers_main"]
