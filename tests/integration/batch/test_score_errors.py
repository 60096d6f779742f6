"""Bad inputs to `modelloop score`: one line, an exit code, and nothing written (no part, no temp file)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import Result

from .conftest import Reference, frame_with_id


def _error_line(done: Result) -> str:
    lines = [line for line in done.output.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, done.output
    assert "Traceback" not in done.output
    return lines[0]


def _nothing_in(folder: Path) -> None:
    assert not folder.exists() or [p for p in folder.rglob("*") if p.is_file()] == []


def _score(run_score: Callable[..., Result], model: str, path: Path, out: Path) -> Result:
    return run_score("--model", model, "--input", str(path), "--output", str(out), "--no-record")


def test_a_missing_column(reference: Reference, tmp_path: Path, run_score: Callable[..., Result]) -> None:
    frame = frame_with_id(reference).drop(columns=["mean_radius"])
    path = tmp_path / "in.parquet"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)
    done = _score(run_score, reference.ref, path, tmp_path / "out")
    assert done.exit_code == 2
    assert _error_line(done) == "error: missing required column(s): mean_radius"
    _nothing_in(tmp_path / "out")


def test_a_column_of_the_wrong_type(
    reference: Reference, tmp_path: Path, run_score: Callable[..., Result]
) -> None:
    frame = frame_with_id(reference)
    frame["mean_texture"] = frame["mean_texture"].astype(str)
    path = tmp_path / "in.parquet"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, row_group_size=100)
    done = _score(run_score, reference.ref, path, tmp_path / "out")
    assert done.exit_code == 2
    assert "column 'mean_texture' has datatype BYTES; the model expects FP64" in _error_line(done)
    _nothing_in(tmp_path / "out")


@pytest.mark.parametrize("name", ["garbage.parquet", "garbage.csv", "absent.parquet"])
def test_an_unreadable_file(
    reference: Reference, tmp_path: Path, run_score: Callable[..., Result], name: str
) -> None:
    path = tmp_path / name
    if not name.startswith("absent"):
        path.write_bytes(b"\x00\xff\x00 not a table \xfe" * 10)
    done = _score(run_score, reference.ref, path, tmp_path / "out")
    assert done.exit_code == 2
    assert _error_line(done).startswith(f"error: input {path}")
    _nothing_in(tmp_path / "out")


def test_a_failure_half_way_leaves_nothing(
    reference: Reference, tmp_path: Path, run_score: Callable[..., Result]
) -> None:
    """The second row group has a string column: the first was already written to a temporary part."""
    good = pa.Table.from_pandas(frame_with_id(reference).head(100), preserve_index=False)
    bad_frame = frame_with_id(reference).tail(100)
    bad_frame["mean_texture"] = bad_frame["mean_texture"].astype(str)
    path = tmp_path / "in.csv"
    frame_with_id(reference).head(100).to_csv(path, index=False)
    with path.open("a") as f:
        f.write(",".join(["1"] + ["x"] * 30) + "\n")
    done = _score(run_score, reference.ref, path, tmp_path / "out")
    assert done.exit_code == 2, done.output
    _error_line(done)
    _nothing_in(tmp_path / "out")
    del good


@pytest.mark.parametrize("model", ["no-such-model/1", "batch-ref@no-such-alias", "batch-ref/999"])
def test_an_unknown_model(
    model: str, parquet_input: Path, tmp_path: Path, run_score: Callable[..., Result]
) -> None:
    done = _score(run_score, model, parquet_input, tmp_path / "out")
    assert done.exit_code == 3, done.output
    _error_line(done)
    _nothing_in(tmp_path / "out")
