"""`modelloop score --shards N` with no shard named scores every shard on this machine: N real `modelloop
score` processes under one parent run (an alias resolved once), one progress line for the batch, and a
failure that names the failed shards and ends the parent run FAILED, a SIGTERM that stops every shard and
ends it KILLED."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import mlflow
import pandas as pd
from click.testing import CliRunner, Result

from modelloop.adapters.mlflow_batch_runs import TAG_BATCH_SHARD
from modelloop.cli import cli

from .conftest import Reference, batch_runs

ALIAS = "local-shards"


def test_every_shard_scored_here_under_one_parent_run(
    reference: Reference, parquet_input: Path, tmp_path: Path
) -> None:
    client = mlflow.MlflowClient(reference.tracking_uri)
    client.set_registered_model_alias(reference.model.name, ALIAS, reference.model.version)
    out = tmp_path / "out"
    args = ["score", "--tracking-uri", reference.tracking_uri, "--model", f"{reference.model.name}@{ALIAS}",
            "--input", str(parquet_input), "--output", str(out), "--key", "customer_id",
            "--batch-id", "here", "--shards", "3"]  # fmt: skip
    done = CliRunner().invoke(cli, args, env={"JOB_COMPLETION_INDEX": None})
    assert done.exit_code == 0, done.output
    rows = len(reference.proba)
    assert "batch here: 3 shards in local processes" in done.output
    assert f"scored {rows:,} rows of {rows:,} (100%)" in done.output  # the batch's own progress line
    for index in range(3):
        assert (
            f"[shard {index}] batch here shard {index}::3: model {reference.model.name} version"
            in done.output
        )
    assert "batch here: 3 shards scored in" in done.output
    parts = sorted(out.glob("*.parquet"))
    assert [p.name for p in parts] == [f"here-{i:05d}.parquet" for i in range(3)]
    scored = pd.concat([pd.read_parquet(p) for p in parts])
    assert sorted(scored["customer_id"]) == list(range(1000, 1000 + rows))
    assert set(scored["model_version"]) == {reference.model.version}
    runs = batch_runs(reference.tracking_uri, "here")
    [parent] = [r for r in runs if r.data.tags[TAG_BATCH_SHARD] == "parent"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.data.tags[TAG_BATCH_SHARD] for r in children) == ["0", "1", "2"]
    assert {r.data.params["model_version"] for r in children} == {reference.model.version}
    finished = client.get_run(parent.info.run_id)
    assert finished.info.status == "FINISHED" and finished.data.metrics["rows.scored"] == rows


def test_failed_shards_are_named_and_the_parent_run_ends_failed(
    reference: Reference, parquet_input: Path, tmp_path: Path, run_score: Callable[..., Result]
) -> None:
    out = tmp_path / "out"
    done = run_score("--model", f"{reference.model.name}/999", "--input", str(parquet_input),
                     "--output", str(out), "--batch-id", "herefail", "--shards", "2")  # fmt: skip
    assert done.exit_code != 0
    assert "[shard 0] error: model batch-ref has no version 999" in done.output
    assert "[shard 1] error: model batch-ref has no version 999" in done.output
    assert "error: batch herefail: shard(s) 0, 1 of 2 failed (above); no part is written" in done.output
    assert not out.exists() or not list(out.glob("*.parquet"))
    [parent] = batch_runs(reference.tracking_uri, "herefail")
    assert parent.data.tags[TAG_BATCH_SHARD] == "parent" and parent.info.status == "FAILED"


def test_sigterm_stops_every_shard_and_ends_the_parent_run_killed(
    reference: Reference, parquet_input: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "modelloop", "score", "--tracking-uri", reference.tracking_uri,
           "--model", reference.ref, "--input", str(parquet_input), "--output", str(out),
           "--batch-id", "hereterm", "--shards", "2", "--quiet"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "JOB_COMPLETION_INDEX"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert "2 shards in local processes" in first, first
        running = min(2, len(os.sched_getaffinity(0)))  # at most one shard a core at once
        deadline = time.monotonic() + 30
        while len(shard_pids := _children(proc.pid)) < running and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(shard_pids) == running
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == 128 + signal.SIGTERM, rest
    assert not any(Path(f"/proc/{pid}").exists() for pid in shard_pids)  # reaped, not left running
    assert not out.exists() or not list(out.glob("*.parquet"))
    [parent] = batch_runs(reference.tracking_uri, "hereterm")
    assert parent.info.status == "KILLED"


def _children(pid: int) -> list[int]:
    """The pids of `pid`'s child processes (Linux /proc)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found
