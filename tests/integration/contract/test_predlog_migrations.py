"""The prediction-log schema under migrations, on real SQLite files and a real PostgreSQL.

Before migrations every process ran `create_all`: 8 processes opening a fresh database at once failed
(PostgreSQL: `IntegrityError` on `pg_type_typname_nsp_index` or `DuplicateTable`; SQLite: "table
modelloop_prediction_blocks already exists"), reported as "database unreachable" (issue 12, finding 7).
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from modelloop.contract.errors import ConfigError, UnavailableError
from modelloop.contract.predlog import (
    PREDICTION_COLUMN,
    REQUEST_ID_COLUMN,
    TIME_COLUMN,
    Feedback,
    PredictionBatch,
    SchemaError,
    SqlPredictionLog,
    ensure_schema,
    head_revision,
)
from modelloop.contract.predlog.migrate import INITIAL_REVISION, SCHEMA_LOCK_KEY
from modelloop.contract.predlog.tables import VERSION_TABLE, blocks_table, feedback_table, metadata
from modelloop.contract.registry import Route
from tests.conftest import scratch_database

WRITERS = 8
ROWS_PER_WRITER = 25
# generous: 8 interpreters importing pyarrow and SQLAlchemy on a busy 2-core machine
START_TIMEOUT = 300.0


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'log.db'}"
    return str(request.getfixturevalue("fresh_postgres_url"))


@pytest.fixture
def engine(url: str) -> Iterator[sa.Engine]:
    eng = sa.create_engine(url, poolclass=sa.NullPool)
    try:
        yield eng
    finally:
        eng.dispose()


def _batch(writer: int, n: int) -> PredictionBatch:
    table = pa.table(
        {
            TIME_COLUMN: pa.array([1000.0 * writer + i for i in range(n)], pa.float64()),
            REQUEST_ID_COLUMN: pa.array([f"w{writer}-{i}" for i in range(n)]),
            PREDICTION_COLUMN: pa.array([i % 2 for i in range(n)], pa.int64()),
            "x": pa.array([float(i) for i in range(n)]),
        }
    )
    return PredictionBatch("m", "1", Route.CHAMPION, table)


def _writer(url: str, index: int, barrier: Any, results: Any) -> None:
    """One process: wait for the others, then open the store (migrating it) and write a batch."""
    try:
        barrier.wait(START_TIMEOUT)
        store = SqlPredictionLog(url)
        try:
            store.write(_batch(index, ROWS_PER_WRITER))
            store.add_feedback([Feedback(f"w{index}-0", index, "m")])
        finally:
            store.close()
        results.put((index, "ok"))
    except BaseException as exc:
        results.put((index, f"{type(exc).__name__}: {exc} (caused by {exc.__cause__!r})"))


def _versions(engine: sa.Engine) -> list[str]:
    with engine.connect() as conn:
        return [row[0] for row in conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}"))]


def test_eight_writers_starting_together_on_a_fresh_database_all_succeed(url: str, engine: sa.Engine) -> None:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(WRITERS)
    results = ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(url, i, barrier, results)) for i in range(WRITERS)]
    for p in procs:
        p.start()
    try:
        outcomes = dict(results.get(timeout=2 * START_TIMEOUT) for _ in procs)
    finally:
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                p.kill()
    assert outcomes == {i: "ok" for i in range(WRITERS)}
    assert [p.exitcode for p in procs] == [0] * WRITERS

    assert _versions(engine) == [head_revision()]
    store = SqlPredictionLog(url)
    try:
        assert store.count("m", 0.0, 1e12) == WRITERS * ROWS_PER_WRITER
        table = store.read_window("m", 0.0, 1e12)
        assert table is not None
        expected = {f"w{w}-{i}" for w in range(WRITERS) for i in range(ROWS_PER_WRITER)}
        assert sorted(table.column(REQUEST_ID_COLUMN).to_pylist()) == sorted(expected)
        assert store.read_feedback() == {f"w{w}-0": w for w in range(WRITERS)}
    finally:
        store.close()


def _encode(table: pa.Table) -> bytes:
    """A block as the store has always written it (Arrow IPC stream, LZ4)."""
    sink = pa.BufferOutputStream()
    options = pa.ipc.IpcWriteOptions(compression="lz4")
    with pa.ipc.new_stream(sink, table.schema, options=options) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def _make_create_all_era_database(engine: sa.Engine) -> None:
    """What every process did before migrations: `create_all`, then rows written into it."""
    metadata.create_all(engine)
    table = _batch(0, 10).table
    with engine.begin() as conn:
        conn.execute(
            blocks_table.insert(),
            {
                "model_name": "m",
                "model_version": "1",
                "route": "champion",
                "t_start": 0.0,
                "t_end": 9.0,
                "n_rows": 10,
                "format": "arrow-ipc-lz4",
                "payload": _encode(table),
            },
        )
        conn.execute(
            feedback_table.insert(), {"request_id": "w0-3", "model_name": "m", "label": "1", "time": 5.0}
        )


def test_a_create_all_era_database_is_adopted_with_its_rows(
    url: str, engine: sa.Engine, caplog: pytest.LogCaptureFixture
) -> None:
    _make_create_all_era_database(engine)
    assert not sa.inspect(engine).has_table(VERSION_TABLE)

    caplog.set_level(logging.INFO, logger="modelloop.contract.predlog.migrate")
    store = SqlPredictionLog(url)
    try:
        assert f"adopting tables made before migrations at {INITIAL_REVISION}" in caplog.text
        assert _versions(engine) == [head_revision()]
        table = store.read_window("m", 0.0, 100.0)
        assert table is not None
        assert table.column(REQUEST_ID_COLUMN).to_pylist() == [f"w0-{i}" for i in range(10)]
        assert store.read_feedback() == {"w0-3": 1}
        store.write(_batch(1, 5))
        assert store.count("m", 0.0, 1e12) == 15
    finally:
        store.close()


def test_the_head_revision_matches_the_tables_the_store_uses(engine: sa.Engine) -> None:
    """Autogenerate finds nothing to do: the migrations and `tables.metadata` describe one schema."""
    assert ensure_schema(engine) == head_revision()
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE, "compare_type": True})
        assert compare_metadata(ctx, metadata) == []


def test_the_migrated_schema_reflects_exactly_as_create_all_made_it(
    postgres_admin_url: str, fresh_postgres_url: str, tmp_path: Path
) -> None:
    with scratch_database(postgres_admin_url, "modelloop_t_legacy") as legacy_pg:
        pairs = [
            (fresh_postgres_url, legacy_pg),
            (f"sqlite:///{tmp_path / 'migrated.db'}", f"sqlite:///{tmp_path / 'legacy.db'}"),
        ]
        for migrated_url, legacy_url in pairs:
            migrated, legacy = sa.create_engine(migrated_url), sa.create_engine(legacy_url)
            try:
                ensure_schema(migrated)
                metadata.create_all(legacy)
                assert _reflect(migrated) == _reflect(legacy)
            finally:
                migrated.dispose()
                legacy.dispose()


def _reflect(engine: sa.Engine) -> dict[str, Any]:
    inspector = sa.inspect(engine)
    described: dict[str, Any] = {}
    for name in (blocks_table.name, feedback_table.name):
        described[name] = {
            "columns": [
                (c["name"], str(c["type"]), c["nullable"], c.get("default"), c.get("autoincrement"))
                for c in inspector.get_columns(name)
            ],
            "pk": inspector.get_pk_constraint(name)["constrained_columns"],
            "indexes": sorted((i["name"], tuple(i["column_names"])) for i in inspector.get_indexes(name)),
        }
    return described


def test_a_revision_newer_than_the_code_is_refused_clearly(url: str, engine: sa.Engine) -> None:
    SqlPredictionLog(url).close()
    with engine.begin() as conn:
        conn.execute(sa.text(f"UPDATE {VERSION_TABLE} SET version_num = 'f00dcafe9999'"))

    with pytest.raises(SchemaError, match="'f00dcafe9999', newer than this modelloop knows") as info:
        SqlPredictionLog(url)
    assert isinstance(info.value, ConfigError)
    assert not isinstance(info.value, UnavailableError)
    assert "unreachable" not in str(info.value)
    assert _versions(engine) == ["f00dcafe9999"]


def test_a_database_with_only_some_of_the_tables_is_refused(url: str, engine: sa.Engine) -> None:
    feedback_table.create(engine)
    with pytest.raises(SchemaError, match="has modelloop_feedback but not modelloop_prediction_blocks"):
        ensure_schema(engine)
    assert not sa.inspect(engine).has_table(VERSION_TABLE)


def test_ensure_schema_is_idempotent(engine: sa.Engine) -> None:
    assert ensure_schema(engine) == head_revision()
    assert ensure_schema(engine) == head_revision()
    assert _versions(engine) == [head_revision()]


def test_a_starter_waits_for_the_postgres_migration_lock(fresh_postgres_url: str) -> None:
    engine = sa.create_engine(fresh_postgres_url)
    holder = engine.connect()
    try:
        holder.begin()
        holder.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": SCHEMA_LOCK_KEY})

        with pytest.raises(UnavailableError, match="held the migration lock") as info:
            ensure_schema(engine, lock_timeout=0.5)
        assert "unreachable" not in str(info.value)

        done: list[object] = []
        waiter = threading.Thread(target=lambda: done.append(_ensure_or_error(engine)), daemon=True)
        waiter.start()
        time.sleep(1.0)
        assert done == [], "ensure_schema went ahead while another process held the lock"
        holder.rollback()
        waiter.join(timeout=120)
        assert done == [head_revision()]
    finally:
        holder.close()
        engine.dispose()


def _ensure_or_error(engine: sa.Engine) -> object:
    try:
        return ensure_schema(engine, lock_timeout=120.0)
    except Exception as exc:
        return exc


def test_a_starter_waits_for_the_sqlite_writer_lock_within_a_bound(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    engine = sa.create_engine(url, connect_args={"timeout": 0.1})
    holder = engine.connect()
    try:
        holder.exec_driver_sql("BEGIN IMMEDIATE")
        with pytest.raises(UnavailableError, match="held the migration lock") as info:
            ensure_schema(engine, lock_timeout=1.0)
        assert "unreachable" not in str(info.value)
        holder.rollback()
        assert ensure_schema(engine) == head_revision()
    finally:
        holder.close()
        engine.dispose()


def test_unreachable_databases_are_still_unavailable(tmp_path: Path) -> None:
    for url in (
        "postgresql+psycopg2://nobody:x@127.0.0.1:1/none",
        f"sqlite:///{tmp_path / 'no-such-dir' / 'log.db'}",
    ):
        engine = sa.create_engine(url)
        try:
            with pytest.raises(UnavailableError, match="database unreachable"):
                ensure_schema(engine)
        finally:
            engine.dispose()
