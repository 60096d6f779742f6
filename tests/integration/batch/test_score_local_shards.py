"""`modelloop score --shards N` with no shard named scores every shard on this machine: N real `modelloop
score` processes under one parent run (an alias resolved once), one progress line for the batch, and a
failure that names the failed shard (the others' parts are written) and ends the parent run FAILED, an
unknown version refused before anything starts, and a SIGTERM that stops every shard cleanly (no file left)
and ends the parent run KILLED."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import mlflow
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from click.testing import CliRunner, Result

from modelloop.adapters.mlflow_batch_runs import TAG_BATCH_SHARD
from modelloop.batch.progress import parse_line
from modelloop.cli import cli

from .conftest import Reference, batch_runs, frame_with_id

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


def test_an_unknown_version_is_refused_before_any_shard_or_run(
    reference: Reference, parquet_input: Path, tmp_path: Path, run_score: Callable[..., Result]
) -> None:
    out = tmp_path / "out"
    done = run_score("--model", f"{reference.model.name}/999", "--input", str(parquet_input),
                     "--output", str(out), "--batch-id", "herefail", "--shards", "2")  # fmt: skip
    assert done.exit_code != 0
    assert done.output == "error: model batch-ref has no version 999\n"
    assert not out.exists()
    assert batch_runs(reference.tracking_uri, "herefail") == []


def test_one_failed_shard_is_named_and_the_others_parts_are_written(
    reference: Reference, tmp_path: Path, run_score: Callable[..., Result]
) -> None:
    """Shard 1's row group is corrupt (its page header overwritten): shard 0 still writes its part."""
    frame = frame_with_id(reference)
    path = tmp_path / "in.parquet"
    half = len(frame) // 2
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, row_group_size=half + 1)
    chunk = pq.ParquetFile(path).metadata.row_group(1).column(1)
    data = bytearray(path.read_bytes())
    data[chunk.data_page_offset : chunk.data_page_offset + chunk.total_compressed_size] = b"\xff" * (
        chunk.total_compressed_size
    )
    path.write_bytes(bytes(data))
    out = tmp_path / "out"
    done = run_score("--model", reference.ref, "--input", str(path), "--output", str(out),
                     "--key", "customer_id", "--batch-id", "halffail", "--shards", "2")  # fmt: skip
    assert done.exit_code != 0
    assert f"[shard 1] error: input {path} is not a readable Parquet file" in done.output
    assert (
        "error: batch halffail: shard(s) 1 of 2 failed (above); the other 1 part(s) are written"
        in done.output
    )
    assert [p.name for p in out.glob("*.parquet")] == ["halffail-00000.parquet"]
    assert len(pd.read_parquet(out / "halffail-00000.parquet")) == half  # rows [0, half): group 0 only
    runs = batch_runs(reference.tracking_uri, "halffail")
    [parent] = [r for r in runs if r.data.tags[TAG_BATCH_SHARD] == "parent"]
    assert parent.info.status == "FAILED"
    assert [r.data.tags[TAG_BATCH_SHARD] for r in runs if r is not parent] == ["0"]


def test_sigterm_stops_every_shard_cleanly_and_ends_the_parent_run_killed(
    reference: Reference, tmp_path: Path
) -> None:
    """SIGTERM while the shards score: each removes its uncommitted part, nothing is left in the output."""
    frame = frame_with_id(reference)
    big = pd.concat([frame] * 2000, ignore_index=True)  # about 1.1M rows: seconds of scoring per shard
    big["customer_id"] = range(len(big))
    path = tmp_path / "big.parquet"
    pq.write_table(pa.Table.from_pandas(big, preserve_index=False), path, row_group_size=100_000)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "modelloop", "score", "--tracking-uri", reference.tracking_uri,
           "--model", reference.ref, "--input", str(path), "--output", str(out), "--key", "customer_id",
           "--batch-id", "hereterm", "--shards", "2", "--memory-budget", "400M"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "JOB_COMPLETION_INDEX"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        seen = []
        for line in proc.stdout:  # the batch's progress line once rows are scored: a shard is mid-batch
            seen.append(line)
            if (parsed := parse_line(line)) is not None and parsed[0] > 0:
                break
        assert parse_line(seen[-1]) is not None, "".join(seen)
        shard_pids = _children(proc.pid)
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == 128 + signal.SIGTERM, rest
    assert "error: stopped by SIGTERM (its uncommitted output removed)" in rest
    assert not any(Path(f"/proc/{pid}").exists() for pid in shard_pids)  # reaped, not left running
    assert not out.exists() or [p for p in out.rglob("*") if p.is_file()] == []  # not even a temporary file
    [parent] = batch_runs(reference.tracking_uri, "hereterm")
    assert parent.info.status == "KILLED"


def _children(pid: int) -> list[int]:
    """The pids of `pid`'s child processes (Linux /proc)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found
