"""The batch package's pieces on their own: shards, chunk sizes, row checks, the sample, sources and sinks."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from modelloop.batch.rows import check_chunk, check_columns
from modelloop.batch.sample import InputSample
from modelloop.batch.scoring import chunk_rows_for
from modelloop.batch.shards import Shard
from modelloop.batch.sinks import ParquetSink, SqlSink
from modelloop.batch.sources import CsvSource, ParquetSource, SqlSource
from modelloop.cli.score import check_batch_id, parse_size
from modelloop.contract.errors import InvalidInputError
from modelloop.serving.schema import Column, ModelSchema

SCHEMA = ModelSchema(
    columns=(
        Column("x", "float", "FP64", "float64", True),
        Column("n", "int", "INT64", "int64", True),
        Column("city", "string", "BYTES", "object", True),
    ),
    prediction_datatype="FP64",
    categories={"city": frozenset({"paris", "oslo"})},
)


def test_shards_parse_and_split_rows_exactly_once_in_even_contiguous_ranges() -> None:
    assert Shard.parse("2::5") == Shard(2, 5)
    for bad in ["2", "5::5", "a::b", "-1::3"]:
        with pytest.raises(InvalidInputError):
            Shard.parse(bad)
    for total in (0, 1, 5, 23, 1_000_003):
        for count in range(1, 8):
            ranges = [Shard(i, count).row_range(total) for i in range(count)]
            assert ranges[0][0] == 0 and ranges[-1][1] == total
            assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))  # contiguous
            sizes = [stop - start for start, stop in ranges]
            assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("group_rows", [1, 7, 100, 1_000])
def test_parquet_shards_read_every_row_once_whatever_the_row_groups(tmp_path: Path, group_rows: int) -> None:
    """One row group or many, aligned with the ranges or not: N shards read rows 0..T-1 once, in order,
    each chunk's first_row its input row number, and only their own rows (a shared group is sliced)."""
    total = 523
    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"id": pa.array(range(total), type=pa.int64())}), path, row_group_size=group_rows)
    for count in (1, 2, 3, 8):
        seen: list[int] = []
        for index in range(count):
            source = ParquetSource(path, shard=Shard(index, count))
            mine: list[int] = []
            for chunk in source.chunks(64):
                ids = chunk.batch.column("id").to_pylist()
                assert ids == list(range(chunk.first_row, chunk.first_row + len(ids)))
                assert len(ids) <= 64
                mine += ids
            assert len(mine) == source.total_rows()
            seen += mine
        assert seen == list(range(total))


def test_sizes_and_batch_ids() -> None:
    assert parse_size("512M") == 512 << 20 and parse_size("1GiB") == 1 << 30 and parse_size("100") == 100
    with pytest.raises(InvalidInputError):
        parse_size("lots")
    assert check_batch_id("nightly-2026-11-30") == "nightly-2026-11-30"
    with pytest.raises(InvalidInputError):
        check_batch_id("../etc")
    assert chunk_rows_for(1 << 30, 30) > chunk_rows_for(64 << 20, 30) >= 1024


def test_rows_are_refused_one_by_one_with_the_servers_reasons() -> None:
    batch = pa.record_batch(
        {
            "x": pa.array([1.0, float("nan"), None, 4.0, 5.0]),
            "n": pa.array([1, 2, 3, None, 5], type=pa.int64()),
            "city": pa.array(["paris", "oslo", "oslo", "oslo", "rome"]),
        }
    )
    checked = check_chunk(SCHEMA, batch)
    assert checked.accepted.tolist() == [0] and checked.rejected.tolist() == [1, 2, 3, 4]
    assert checked.reasons == [
        "column 'x' contains NaN; the schema requires a value",
        "column 'x' has no value; the schema requires one",
        "column 'n' has no value; the schema requires one",
        "column 'city' has a value that is not a category seen in training",
    ]
    assert checked.features is not None and checked.features.n_rows == 1


def test_whole_column_problems_are_errors() -> None:
    with pytest.raises(InvalidInputError, match="missing required column"):
        check_columns(SCHEMA, ["x", "n"])
    batch = pa.record_batch({"x": pa.array(["1"]), "n": pa.array([1]), "city": pa.array(["oslo"])})
    with pytest.raises(InvalidInputError, match="column 'x' has datatype BYTES; the model expects FP64"):
        check_chunk(SCHEMA, batch)


def test_the_sample_is_bounded_and_uniform() -> None:
    sample = InputSample(["v"], capacity=1000, seed=1)
    for start in range(0, 100_000, 7_000):
        sample.add(pa.record_batch({"v": pa.array(np.arange(start, min(start + 7_000, 100_000)))}))
    assert sample.rows == 1000 and sample.seen == 100_000
    table = sample.table()
    assert table is not None and table.num_rows == 1000
    values = table.column("v").to_numpy()
    assert 40_000 < values.mean() < 60_000 and len(set(values.tolist())) == 1000


def test_the_sample_keeps_the_same_rows_however_the_chunks_are_offered() -> None:
    values = np.arange(50_000)
    whole = InputSample(["v"], capacity=2000, seed=3)
    whole.add(pa.record_batch({"v": pa.array(values)}))
    split = InputSample(["v"], capacity=2000, seed=3)
    for start in range(0, 50_000, 5_000):  # the same keys drawn, the same positions offered
        batch = pa.record_batch({"v": pa.array(np.concatenate([values[start : start + 5_000], [-1, -2]]))})
        split.add(batch, np.arange(5_000))
    a, b = whole.table(), split.table()
    assert a is not None and b is not None and a.num_rows == b.num_rows == 2000
    assert whole.seen == split.seen == 50_000
    assert a.column("v").to_pylist() == b.column("v").to_pylist()


def test_csv_blocks_and_parquet_groups_cover_the_input_once(tmp_path: Path) -> None:
    table = pa.table({"id": pa.array(np.arange(5000)), "x": pa.array(np.arange(5000) * 0.5)})
    pq.write_table(table, tmp_path / "t.parquet", row_group_size=300)
    (tmp_path / "t.csv").write_text(table.to_pandas().to_csv(index=False))
    for make in (
        lambda s: ParquetSource(tmp_path / "t.parquet", shard=s),
        lambda s: CsvSource(tmp_path / "t.csv", shard=s),
    ):
        rows: list[int] = []
        for i in range(3):
            for chunk in make(Shard(i, 3)).chunks(1024):
                ids = chunk.batch.column("id").to_pylist()
                assert ids == list(range(chunk.first_row, chunk.first_row + len(ids)))
                rows += ids
        assert sorted(rows) == list(range(5000))


def test_key_ranges_cut_every_integer_into_exactly_one_shard() -> None:
    for count in range(1, 8):
        for low, high in [(0, 99), (-5, 5), (7, 7), (0, 2), (10**12, 10**12 + 12345)]:
            bounds = [Shard(i, count).key_bounds(low, high) for i in range(count)]
            assert bounds[0][0] is None and bounds[-1][1] is None
            for (_, upper), (lower, _) in itertools.pairwise(bounds):
                assert upper == lower  # contiguous: one range ends where the next begins
            owners = [
                [i for i, (lo, up) in enumerate(bounds) if (lo is None or k >= lo) and (up is None or k < up)]
                for k in range(low - 3, min(high, low + 500) + 3)
            ]
            assert all(len(o) == 1 for o in owners)
    assert [Shard(i, 4).key_bounds(0, 99) for i in range(4)] == [(None, 25), (25, 50), (50, 75), (75, None)]


def test_a_query_shard_reads_one_key_range(tmp_path: Path) -> None:
    import sqlalchemy as sa

    url = f"sqlite:///{tmp_path / 'x.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE t (id INTEGER, x REAL, label TEXT)"))
        conn.execute(sa.text("CREATE INDEX t_id ON t (id)"))
        rows = [{"id": i, "x": i * 0.5, "label": f"r{i}"} for i in range(1000, 1100)]
        conn.execute(
            sa.text("INSERT INTO t VALUES (:id, :x, :label)"), [*rows, {"id": None, "x": 0, "label": "n"}]
        )
    engine.dispose()
    seen: list[object] = []
    for i in range(3):
        source = SqlSource(url, "SELECT * FROM t;", shard=Shard(i, 3), shard_key="id")
        assert "%" not in source.statement() and "modelloop_q" in source.statement()
        ids = [k for c in source.chunks(16) for k in c.batch.column("id").to_pylist()]
        keys = sorted(k for k in ids if k is not None)
        assert keys == list(range(keys[0], keys[-1] + 1))  # one contiguous range
        seen += ids
    assert sorted(k for k in seen if k is not None) == list(range(1000, 1100)) and seen.count(None) == 1
    with pytest.raises(InvalidInputError, match="--shard-key"):
        SqlSource("sqlite://", "SELECT 1", shard=Shard(0, 2))
    with pytest.raises(InvalidInputError, match="not an integer column"):
        SqlSource(url, "SELECT * FROM t", shard=Shard(1, 2), shard_key="label").statement()


def test_a_parquet_part_is_visible_only_once_committed(tmp_path: Path) -> None:
    sink = ParquetSink(tmp_path / "out", "b", Shard(1, 2))
    scored = pa.table({"row": [1, 2], "prediction": [0.5, 0.25]})
    rejects = pa.table({"row": [3], "reason": ["bad"]})
    sink.write(scored, rejects)
    assert not (tmp_path / "out" / "b-00001.parquet").exists()
    sink.abort()
    assert [p for p in (tmp_path / "out").rglob("*") if p.is_file()] == []
    sink = ParquetSink(tmp_path / "out", "b", Shard(1, 2))
    sink.write(scored, rejects)
    sink.commit(scored.schema, rejects.schema)
    assert pq.read_table(tmp_path / "out" / "b-00001.parquet").num_rows == 2
    assert pq.read_table(tmp_path / "out" / "rejects" / "b-00001.parquet").num_rows == 1


def test_a_sql_sink_replaces_its_own_rows_and_leaves_others(tmp_path: Path) -> None:
    import sqlalchemy as sa

    url = f"sqlite:///{tmp_path / 'o.db'}"
    scored = pa.table({"row": [1, 2], "prediction": [0.5, 0.25]})
    empty = pa.table({"row": pa.array([], pa.int64()), "reason": pa.array([], pa.string())})
    for batch, times in (("a", 2), ("b", 1)):
        for _ in range(times):
            sink = SqlSink(url, "scores", batch, Shard())
            sink.write(scored, empty)
            sink.commit(scored.schema, empty.schema)
    aborted = SqlSink(url, "scores", "c", Shard())
    aborted.write(scored, empty)
    aborted.abort()
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        counts = dict(conn.execute(sa.text("SELECT batch_id, count(*) FROM scores GROUP BY batch_id")).all())
    assert counts == {"a": 2, "b": 2}
    assert sa.inspect(engine).get_table_names() == ["scores"]
    engine.dispose()
