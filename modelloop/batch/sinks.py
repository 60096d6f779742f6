"""Where a shard's answers go: Parquet parts in a folder, or a SQL table; nothing visible until `commit`.

Used by `batch.scoring`: `write` per chunk, then `commit` once every chunk is scored, or `abort` on failure.

- `ParquetSink`: the scored rows go to `<dir>/<batch id>-<index>.parquet` and the rejects to
  `<dir>/rejects/<batch id>-<index>.parquet`, each written under a hidden temporary name in the same folder
  and renamed at `commit` (atomic on one filesystem). A re-run of the same batch id and shard overwrites its
  part, so it never duplicates rows; `abort` deletes the temporary files.
- `SqlSink`: chunks go to a staging table of their own (`modelloop_stage_<hash>`); `commit` moves them into
  the target table in one transaction, first deleting that batch id's and shard's earlier rows (a re-run
  replaces, never duplicates), and drops the staging table. Rejects go the same way to `<table>_rejects`.
  Both tables get `batch_id` and `shard` columns and are created when missing.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pyarrow as pa

from modelloop.contract.errors import InvalidInputError, UnavailableError
from modelloop.serving.errors import clip

from .shards import Shard

if TYPE_CHECKING:
    import pyarrow.parquet as pq
    import sqlalchemy as sa

log = logging.getLogger(__name__)


class Sink(Protocol):
    """Where one shard's answers go (see the module docstring)."""

    location: str

    def write(self, scored: pa.Table, rejects: pa.Table) -> None: ...

    def commit(self, scored_schema: pa.Schema, rejects_schema: pa.Schema) -> None: ...

    def abort(self) -> None: ...


def part_name(batch_id: str, shard: Shard) -> str:
    """`<batch id>-<index>.parquet`: the part of one shard of one batch."""
    return f"{batch_id}-{shard.index:05d}.parquet"


def _repetitive(schema: pa.Schema) -> list[str]:
    """The columns worth a dictionary: the text ones (the model version, reasons, text keys and labels).
    Numbers are written plainly: trying a dictionary on probabilities tripled the writer's CPU time (0.07 ->
    0.2 s per 1,000,000 rows of key, prediction, two probabilities, version) and gave a larger file."""
    text = (pa.types.is_string, pa.types.is_large_string, pa.types.is_binary, pa.types.is_large_binary)
    kept = (*text, pa.types.is_dictionary)  # a column that already is a dictionary stays one
    return [f.name for f in schema if any(is_text(f.type) for is_text in kept)]


class _ParquetPart:
    def __init__(self, final: Path) -> None:
        self.final = final
        self.temp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
        self.writer: pq.ParquetWriter | None = None

    def write(self, table: pa.Table) -> None:
        import pyarrow.parquet as pq

        if self.writer is None:
            self.final.parent.mkdir(parents=True, exist_ok=True)
            self.writer = pq.ParquetWriter(
                self.temp, table.schema, compression="snappy", use_dictionary=_repetitive(table.schema)
            )
        self.writer.write_table(table)

    def commit(self, schema: pa.Schema, *, keep_empty: bool) -> None:
        if self.writer is None and keep_empty:
            self.write(schema.empty_table())
        if self.writer is None:
            self.final.unlink(missing_ok=True)  # a stale part of an earlier run with this batch id
            return
        self.writer.close()
        os.replace(self.temp, self.final)

    def abort(self) -> None:
        if self.writer is not None:
            with contextlib.suppress(OSError, pa.ArrowException):
                self.writer.close()
        self.temp.unlink(missing_ok=True)


class ParquetSink:
    """Parquet parts in a folder (see the module docstring)."""

    def __init__(self, folder: Path, batch_id: str, shard: Shard) -> None:
        if folder.exists() and not folder.is_dir():
            raise InvalidInputError(f"output {clip(str(folder))} exists and is not a folder")
        self.location = str(folder)
        self.scored = _ParquetPart(folder / part_name(batch_id, shard))
        self.rejects = _ParquetPart(folder / "rejects" / part_name(batch_id, shard))

    def write(self, scored: pa.Table, rejects: pa.Table) -> None:
        if scored.num_rows:
            self.scored.write(scored)
        if rejects.num_rows:
            self.rejects.write(rejects)

    def commit(self, scored_schema: pa.Schema, rejects_schema: pa.Schema) -> None:
        self.scored.commit(scored_schema, keep_empty=True)
        self.rejects.commit(rejects_schema, keep_empty=False)

    def abort(self) -> None:
        self.scored.abort()
        self.rejects.abort()


def _sql_type(arrow_type: pa.DataType) -> sa.types.TypeEngine[Any]:
    import sqlalchemy as sa

    if pa.types.is_floating(arrow_type):
        return sa.Float(precision=53)
    if pa.types.is_integer(arrow_type):
        return sa.BigInteger()
    if pa.types.is_boolean(arrow_type):
        return sa.Boolean()
    return sa.Text()


class _SqlPart:
    """One target table and its staging table."""

    def __init__(self, engine: sa.Engine, table: str, batch_id: str, shard: Shard) -> None:
        self.engine = engine
        self.name = table
        self.batch_id = batch_id
        self.shard = shard
        digest = hashlib.sha256(f"{table}\n{batch_id}\n{shard.index}".encode()).hexdigest()[:16]
        self.stage_name = f"modelloop_stage_{digest}"
        self.stage: sa.Table | None = None
        self.schema: pa.Schema | None = None

    def _table(self, name: str, schema: pa.Schema) -> sa.Table:
        import sqlalchemy as sa

        columns = [sa.Column(f.name, _sql_type(f.type)) for f in schema]
        columns += [sa.Column("batch_id", sa.Text()), sa.Column("shard", sa.Integer())]
        return sa.Table(name, sa.MetaData(), *columns)

    def write(self, table: pa.Table) -> None:
        if self.stage is None:
            self.schema = table.schema
            self.stage = self._table(self.stage_name, table.schema)
            with self.engine.begin() as conn:
                self.stage.drop(conn, checkfirst=True)
                self.stage.create(conn)
        rows = table.to_pylist()
        for row in rows:
            row["batch_id"], row["shard"] = self.batch_id, self.shard.index
        with self.engine.begin() as conn:
            conn.execute(self.stage.insert(), rows)

    def commit(self, schema: pa.Schema, *, keep_empty: bool) -> None:
        import sqlalchemy as sa

        if self.stage is None and not keep_empty:
            return
        target = self._table(self.name, self.schema or schema)
        with self.engine.begin() as conn:
            target.create(conn, checkfirst=True)
            conn.execute(
                sa.delete(target).where(
                    target.c.batch_id == self.batch_id, target.c.shard == self.shard.index
                )
            )
            if self.stage is not None:
                names = [c.name for c in self.stage.columns]
                conn.execute(
                    sa.insert(target).from_select(names, sa.select(*[self.stage.c[n] for n in names]))
                )
                self.stage.drop(conn)
        self.stage = None

    def abort(self) -> None:
        if self.stage is None:
            return
        try:
            with self.engine.begin() as conn:
                self.stage.drop(conn, checkfirst=True)
        except Exception:  # the failure being reported matters more than the clean-up
            log.warning("staging table %s could not be dropped", self.stage_name, exc_info=True)


class SqlSink:
    """A SQL table and its rejects table (see the module docstring)."""

    def __init__(self, url: str, table: str, batch_id: str, shard: Shard) -> None:
        import sqlalchemy as sa

        try:
            self._engine = sa.create_engine(url)
        except (sa.exc.ArgumentError, ImportError, ValueError) as exc:
            raise InvalidInputError(
                f"--output-url is not a usable SQLAlchemy URL ({type(exc).__name__})"
            ) from None
        self.location = f"{self._engine.url.render_as_string(hide_password=True)} table {table}"
        self.scored = _SqlPart(self._engine, table, batch_id, shard)
        self.rejects = _SqlPart(self._engine, f"{table}_rejects", batch_id, shard)

    def write(self, scored: pa.Table, rejects: pa.Table) -> None:
        self._guarded(lambda: self._write(scored, rejects))

    def _write(self, scored: pa.Table, rejects: pa.Table) -> None:
        if scored.num_rows:
            self.scored.write(scored)
        if rejects.num_rows:
            self.rejects.write(rejects)

    def commit(self, scored_schema: pa.Schema, rejects_schema: pa.Schema) -> None:
        def both() -> None:
            self.scored.commit(scored_schema, keep_empty=True)
            self.rejects.commit(rejects_schema, keep_empty=False)

        self._guarded(both)
        self._engine.dispose()

    def abort(self) -> None:
        self.scored.abort()
        self.rejects.abort()
        self._engine.dispose()

    def _guarded(self, action: Callable[[], None]) -> None:
        import sqlalchemy as sa

        try:
            action()
        except sa.exc.OperationalError:
            raise UnavailableError(f"the output database {self.location} is unreachable or failed") from None
        except sa.exc.DBAPIError as exc:
            raise InvalidInputError(
                f"the output table refused the rows ({clip(str(exc.orig).splitlines()[0])})"
            ) from None


__all__ = ["ParquetSink", "Sink", "SqlSink", "part_name"]
