"""The prediction-log store port and its SQL implementation (SQLite and PostgreSQL, one code path).

Contract of `PredictionLogStore`:
- `write(batch)` stores the batch atomically (all rows or none) and returns; it raises `UnavailableError`
  when the database cannot be reached, so the caller can keep the batch and retry later. It never blocks
  the caller's event loop on purpose: writers call it from a background thread. A database whose schema
  this code cannot use (migrated by a newer modelloop) raises `SchemaError`, a `ConfigError`.
- `iter_window(model, start, end)` yields Arrow tables, one per stored block overlapping [start, end),
  filtered to rows with `start <= _time < end`, with `_model_version` and `_route` columns added, in
  write order. Memory stays bounded by one block. `read_window` concatenates them.
- Feedback rows are upserted by request id: a later label for the same request replaces the earlier one.
- Instances are safe to share between threads; `close()` releases the connections.

Storage: one row per flushed batch in `modelloop_prediction_blocks` (an Arrow IPC stream, LZ4-compressed,
in a blob), so a million records come back in about a second; feedback in `modelloop_feedback`. The tables
are made and changed by migrations (`contract.predlog.migrate.ensure_schema`), at construction unless
`create=False`, else before the first read or write; any number of processes may start at once.
"""

from __future__ import annotations

import abc
import json
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError, SQLAlchemyError

from modelloop.contract.errors import ConfigError, UnavailableError
from modelloop.contract.predlog.migrate import ensure_schema
from modelloop.contract.predlog.schema import (
    ROUTE_COLUMN,
    TIME_COLUMN,
    VERSION_COLUMN,
    Feedback,
    PredictionBatch,
)
from modelloop.contract.predlog.tables import blocks_table, feedback_table

BLOCK_FORMAT = "arrow-ipc-lz4"
SQLITE_BUSY_TIMEOUT_MS = 10_000  # how long a SQLite writer waits for another process's write lock


class PredictionLogStore(abc.ABC):
    """Where scored instances and their feedback are kept. See the module docstring for the contract."""

    @abc.abstractmethod
    def write(self, batch: PredictionBatch) -> None:
        """Store one batch atomically; `UnavailableError` when the database cannot be reached."""

    @abc.abstractmethod
    def iter_window(
        self, model_name: str, start: float, end: float, *, columns: Sequence[str] | None = None
    ) -> Iterator[pa.Table]:
        """Yield the rows of `model_name` with `start <= _time < end`, one table per stored block."""

    def read_window(
        self, model_name: str, start: float, end: float, *, columns: Sequence[str] | None = None
    ) -> pa.Table | None:
        """All rows of the window as one table, or None when the window holds no rows."""
        tables = list(self.iter_window(model_name, start, end, columns=columns))
        if not tables:
            return None
        return pa.concat_tables(tables, promote_options="permissive")

    @abc.abstractmethod
    def count(self, model_name: str, start: float, end: float) -> int:
        """Rows stored for `model_name` in blocks overlapping [start, end) (cheap: from block headers)."""

    @abc.abstractmethod
    def add_feedback(self, records: Iterable[Feedback]) -> int:
        """Upsert labels by request id; returns how many were written."""

    @abc.abstractmethod
    def read_feedback(self, *, since: float = 0.0, model_name: str | None = None) -> dict[str, Any]:
        """Labels received at or after `since`, by request id."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections."""


def _encode(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema, options=pa.ipc.IpcWriteOptions(compression="lz4")) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def _decode(payload: bytes) -> pa.Table:
    with pa.ipc.open_stream(pa.py_buffer(payload)) as reader:
        return reader.read_all()


class SqlPredictionLog(PredictionLogStore):
    """The prediction log in a SQL database reached through a SQLAlchemy URL (sqlite:/// or postgresql://)."""

    def __init__(self, url: str, *, create: bool = True) -> None:
        try:
            self._engine = sa.create_engine(url, pool_pre_ping=True, future=True)
        except (ArgumentError, NoSuchModuleError) as exc:
            raise ConfigError(
                f"prediction log URL is not a valid SQLAlchemy URL ({type(exc).__name__})"
            ) from exc
        if self._engine.dialect.name == "sqlite":
            sa.event.listen(self._engine, "connect", _sqlite_pragmas)
        self._created = False
        self._create_lock = threading.Lock()
        if create:
            try:
                self._ensure_tables()
            except BaseException:
                self._engine.dispose()
                raise

    @property
    def dialect(self) -> str:
        return str(self._engine.dialect.name)

    def _ensure_tables(self) -> None:
        """Migrate the schema to head once per instance (`UnavailableError`, `SchemaError`: see `migrate`)."""
        if self._created:
            return
        with self._create_lock:
            if not self._created:
                ensure_schema(self._engine)
                self._created = True

    def write(self, batch: PredictionBatch) -> None:
        if batch.num_rows == 0:
            return
        times = batch.table.column(TIME_COLUMN)
        row = {
            "model_name": batch.model_name,
            "model_version": batch.model_version,
            "route": str(batch.route),
            "t_start": float(pc.min(times).as_py()),
            "t_end": float(pc.max(times).as_py()),
            "n_rows": batch.num_rows,
            "format": BLOCK_FORMAT,
            "payload": _encode(batch.table),
        }
        try:
            self._ensure_tables()
            with self._engine.begin() as conn:
                conn.execute(blocks_table.insert(), row)
        except (OperationalError, SQLAlchemyError) as exc:
            raise UnavailableError(f"prediction log write failed ({type(exc).__name__})") from exc

    def iter_window(
        self, model_name: str, start: float, end: float, *, columns: Sequence[str] | None = None
    ) -> Iterator[pa.Table]:
        # the block ids first (ordering them costs little), then the payloads a few ids at a time: ordering
        # the payload rows themselves made SQLite copy every blob of the window into a temporary B-tree
        ids_query = (
            sa.select(blocks_table.c.id)
            .where(blocks_table.c.model_name == model_name)
            .where(blocks_table.c.t_end >= start)
            .where(blocks_table.c.t_start < end)
            .order_by(blocks_table.c.id)
        )
        cols = (blocks_table.c.model_version, blocks_table.c.route, blocks_table.c.payload)
        try:
            self._ensure_tables()
            with self._engine.connect() as conn:
                ids = [row[0] for row in conn.execute(ids_query)]
                chunks = (ids[i : i + 16] for i in range(0, len(ids), 16))
                rows = (
                    row
                    for chunk in chunks
                    for row in conn.execute(
                        sa.select(*cols).where(blocks_table.c.id.in_(chunk)).order_by(blocks_table.c.id)
                    )
                )
                for version, route, payload in rows:
                    table = _decode(payload)
                    times = table.column(TIME_COLUMN)
                    mask = pc.and_(pc.greater_equal(times, start), pc.less(times, end))
                    table = table.filter(mask)
                    if table.num_rows == 0:
                        continue
                    if columns is not None:
                        keep = [c for c in table.column_names if c in set(columns) or c == TIME_COLUMN]
                        table = table.select(keep)
                    n = table.num_rows
                    table = table.append_column(VERSION_COLUMN, pa.array([version] * n, pa.string()))
                    table = table.append_column(ROUTE_COLUMN, pa.array([route] * n, pa.string()))
                    yield table
        except SQLAlchemyError as exc:
            raise UnavailableError(f"prediction log read failed ({type(exc).__name__})") from exc

    def count(self, model_name: str, start: float, end: float) -> int:
        query = (
            sa.select(sa.func.coalesce(sa.func.sum(blocks_table.c.n_rows), 0))
            .where(blocks_table.c.model_name == model_name)
            .where(blocks_table.c.t_end >= start)
            .where(blocks_table.c.t_start < end)
        )
        try:
            self._ensure_tables()
            with self._engine.connect() as conn:
                return int(conn.execute(query).scalar_one())
        except SQLAlchemyError as exc:
            raise UnavailableError(f"prediction log read failed ({type(exc).__name__})") from exc

    def add_feedback(self, records: Iterable[Feedback]) -> int:
        now = time.time()
        rows = {
            r.request_id: {
                "request_id": r.request_id,
                "model_name": r.model_name,
                "label": json.dumps(r.label),
                "time": r.time if r.time is not None else now,
            }
            for r in records
        }
        if not rows:
            return 0
        insert: Any = (
            postgresql.insert(feedback_table)
            if self.dialect == "postgresql"
            else sqlite.insert(feedback_table)
        )
        stmt = insert.on_conflict_do_update(
            index_elements=[feedback_table.c.request_id],
            set_={
                "label": insert.excluded.label,
                "time": insert.excluded.time,
                "model_name": insert.excluded.model_name,
            },
        )
        try:
            self._ensure_tables()
            with self._engine.begin() as conn:
                conn.execute(stmt, list(rows.values()))
        except SQLAlchemyError as exc:
            raise UnavailableError(f"feedback write failed ({type(exc).__name__})") from exc
        return len(rows)

    def read_feedback(self, *, since: float = 0.0, model_name: str | None = None) -> dict[str, Any]:
        query = sa.select(feedback_table.c.request_id, feedback_table.c.label).where(
            feedback_table.c.time >= since
        )
        if model_name is not None:
            query = query.where(
                sa.or_(feedback_table.c.model_name == model_name, feedback_table.c.model_name.is_(None))
            )
        try:
            self._ensure_tables()
            with self._engine.connect() as conn:
                return {rid: json.loads(label) for rid, label in conn.execute(query)}
        except SQLAlchemyError as exc:
            raise UnavailableError(f"feedback read failed ({type(exc).__name__})") from exc

    def close(self) -> None:
        self._engine.dispose()


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    # the busy timeout first: switching a new file to WAL takes the write lock, and without a timeout a
    # process starting beside others fails at once with "database is locked"
    cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def open_prediction_log(url: str) -> SqlPredictionLog:
    """Open the prediction log at a SQLAlchemy URL, its schema migrated to head (created if empty)."""
    return SqlPredictionLog(url)


__all__ = [
    "BLOCK_FORMAT",
    "PredictionLogStore",
    "SqlPredictionLog",
    "blocks_table",
    "feedback_table",
    "open_prediction_log",
]
