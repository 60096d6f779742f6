"""`modelloop score --shards N` on one machine: the N shards as local processes, as the Indexed Job runs them.

`modelloop score --shards N` without `--shard-index` (and outside an Indexed Job's pod, where
`JOB_COMPLETION_INDEX` names the shard) scores the whole input here: `run_local_shards` starts
`modelloop score` once per shard with the command's own arguments, `--shard-index i`, the batch id, the
version (an alias is resolved once by the caller, so every shard scores with the same version) and the
batch's parent MLflow run.
At most as many shards run at once as this process may use cores (its CPU affinity and its container's CPU
quota; `--parallel` sets another number), the rest waiting for a free one, each with one OpenMP and one Arrow
thread unless `OMP_NUM_THREADS` is set, and each within its own `--memory-budget`.

Every line a shard prints is passed on prefixed with `[shard i]`, except its progress lines: those are
summed into one progress line of the batch (rows done of the total, rows/s, ETA). A shard writes and
commits its own part and its own child run, as in the Job; when one fails, the others still finish, and the
command then fails naming the failed shards: a re-run with the same `--batch-id` replaces every part, so
nothing is counted twice.
Ctrl-C or SIGTERM stops every shard: each unwinds and removes its uncommitted part (a SIGTERM raises in a
shard, `contract.interrupts`), within `GRACE` seconds or it is killed.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import FrameType

import click

from modelloop.batch.progress import Progress, parse_line
from modelloop.contract.errors import ModelloopError

#: seconds a shard is given to clean up (remove its uncommitted part) before the next, harder signal
GRACE = 30.0


class ShardsFailedError(ModelloopError):
    """Some shards of a local batch failed (their own errors were printed above)."""


def usable_cores(cpu_max: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """The cores this process may use: its CPU affinity, capped by its cgroup's CPU quota (a container's
    CPU limit, `cpu.max` of cgroup v2: "QUOTA PERIOD", or "max" for none), rounded up."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    with contextlib.suppress(OSError, ValueError):
        quota, period = cpu_max.read_text().split()[:2]
        if quota != "max":
            cores = min(cores, -(-int(quota) // int(period)))
    return max(1, cores)


def shard_env(environ: dict[str, str]) -> dict[str, str]:
    """A shard's environment: `environ`, with one OpenMP thread unless the user chose a number."""
    env = dict(environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


class _BatchProgress:
    """The batch's progress line, from its shards' progress lines (called from their relay threads)."""

    def __init__(self, shards: int, *, enabled: bool) -> None:
        self._shards = shards
        self._progress = Progress(None, enabled=enabled)
        self._done: dict[int, int] = {}
        self._totals: dict[int, int] = {}
        self._lock = threading.Lock()

    def shard_line(self, index: int, rows: int, total: int | None) -> None:
        with self._lock:
            delta = rows - self._done.get(index, 0)
            self._done[index] = rows
            if total is not None:
                self._totals[index] = total
                if len(self._totals) == self._shards:
                    self._progress.total = sum(self._totals.values())
            self._progress.advance(delta)

    def done(self) -> None:
        with self._lock:
            self._progress.done()


def _relay(index: int, stream: Iterable[str], progress: _BatchProgress) -> None:
    """Pass a shard's output on: progress lines into the batch's line, the others prefixed with its index."""
    for line in stream:
        parsed = parse_line(line)
        if parsed is not None:
            progress.shard_line(index, *parsed)
        else:
            click.echo(f"[shard {index}] {line.rstrip()}")


def _end(procs: Sequence[subprocess.Popen[str]], *, signalled: bool) -> None:
    """Make sure `procs` exit: those already sent a signal (`signalled`) get `GRACE` seconds to clean up;
    the others (a Ctrl-C reached them from the terminal, or not) get `GRACE` seconds, then one SIGTERM and
    `GRACE` more; whatever is still running then is killed."""
    steps = [False] if signalled else [False, True]
    for send in steps:
        alive = [p for p in procs if p.poll() is None]
        for proc in alive if send else []:
            proc.terminate()
        deadline = time.monotonic() + GRACE
        for proc in alive:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def run_local_shards(
    args: Sequence[str], *, shards: int, batch_id: str, progress: bool = True, parallel: int | None = None
) -> None:
    """Run shards 0..N-1 of `modelloop score ARGS` (ARGS already carry the model, batch id, `--shards`
    and parent run) as local processes, at most `parallel` (default: the usable cores) at once; raises
    ShardsFailedError naming the shards that failed (see the module docstring)."""
    width = max(1, min(shards, parallel or usable_cores()))
    shown = _BatchProgress(shards, enabled=progress)
    env = shard_env(dict(os.environ))
    started = time.monotonic()
    pending = list(range(shards))
    running: dict[int, subprocess.Popen[str]] = {}
    relays: list[threading.Thread] = []
    ended: queue.SimpleQueue[int] = queue.SimpleQueue()  # shards whose process exited, as they exit
    failed: list[int] = []
    stopping: list[int] = []

    def watch(index: int, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        with proc.stdout:
            _relay(index, proc.stdout, shown)
        proc.wait()
        ended.put(index)

    def stop(signum: int, _frame: FrameType | None) -> None:
        if not stopping:  # each shard gets one SIGTERM: a second would cut its clean-up short
            for proc in running.values():
                proc.terminate()
        stopping.append(signum)
        pending.clear()

    previous = (
        signal.signal(signal.SIGTERM, stop) if threading.current_thread() is threading.main_thread() else None
    )
    click.echo(f"batch {batch_id}: {shards} shards in local processes, {width} at a time")
    signalled = True  # a normal end, or SIGTERM (`stop` sent the shards theirs)
    try:
        while (pending or running) and not stopping:
            while pending and len(running) < width:
                index = pending.pop(0)
                cmd = [sys.executable, "-m", "modelloop", "score", *args, "--shard-index", str(index)]
                proc = subprocess.Popen(
                    cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
                )
                running[index] = proc
                if stopping:  # SIGTERM came while it was being started
                    proc.terminate()
                relay = threading.Thread(target=watch, args=(index, proc), daemon=True)
                relay.start()
                relays.append(relay)
            try:
                index = ended.get(timeout=1.0)  # a timeout, so a signal's handler runs promptly
            except queue.Empty:
                continue
            if running.pop(index).returncode != 0:
                failed.append(index)
    except KeyboardInterrupt:  # Ctrl-C: a terminal sent the shards SIGINT too; they clean up, then exit
        signalled = bool(stopping)
        raise
    except BaseException:
        for proc in running.values():
            proc.terminate()
        raise
    finally:
        _end(list(running.values()), signalled=signalled)
        for relay in relays:  # their last lines (an error) are printed before the command's own
            relay.join(timeout=GRACE)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if stopping:
        raise SystemExit(128 + stopping[0])
    took = time.monotonic() - started
    shown.done()
    if failed:
        names = ", ".join(str(i) for i in sorted(failed))
        written = shards - len(failed)
        kept = f"the other {written} part(s) are written" if written else "no part is written"
        raise ShardsFailedError(
            f"batch {batch_id}: shard(s) {names} of {shards} failed (above); {kept}: re-run with "
            f"--batch-id {batch_id} to score the batch again (its parts are replaced)"
        )
    click.echo(f"batch {batch_id}: {shards} shards scored in {took:.1f} s")


__all__ = ["ShardsFailedError", "run_local_shards", "shard_env", "usable_cores"]
