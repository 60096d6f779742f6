"""The input of a batch, read in bounded chunks: a Parquet file, a CSV file, or a SQL query.

Used by `batch.scoring`. Each source yields `Chunk`s (an Arrow record batch and the input row number of its
first row) for one shard's share only (`batch.shards`), and says what it is for the MLflow record: a location,
a kind and a digest. Digests are cheap and content-dependent: a Parquet file's footer (schema, row groups,
their sizes and statistics), a CSV file's bytes, a query's text and shard. A file that cannot be read, a query
that fails and a shard a source cannot split are `InvalidInputError`s naming the input, never a traceback.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa

from modelloop.contract.errors import InvalidInputError, UnavailableError
from modelloop.serving.errors import clip

from .shards import WHOLE, Shard

#: bytes of CSV text per read block, per row of a chunk and column (a block is roughly one chunk)
_CSV_BYTES_PER_VALUE = 12


@dataclass(frozen=True)
class Chunk:
    """Rows of the input: `first_row` is the input row number of `batch`'s first row."""

    first_row: int
    batch: pa.RecordBatch


class Source(Protocol):
    """One input of a batch (see the module docstring)."""

    kind: str  # "parquet" | "csv" | "sql"
    location: str  # where it is, without credentials

    def column_names(self) -> list[str]:
        """The input's columns (for a query: known once the first chunk is read; [] before)."""
        ...

    def chunks(self, chunk_rows: int) -> Iterator[Chunk]:
        """This shard's rows, at most `chunk_rows` at a time."""
        ...

    def digest(self) -> str:
        """A short hex digest identifying the input's content."""
        ...


def _unreadable(path: Path, what: str, exc: BaseException) -> InvalidInputError:
    if isinstance(exc, FileNotFoundError):
        return InvalidInputError(f"input {path!s} does not exist")
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return InvalidInputError(f"input {path!s} is not a readable {what} file ({clip(detail)})")


class ParquetSource:
    """A Parquet file; a shard reads its contiguous range of rows (`Shard.row_range`), decoding only the row
    groups that range touches (a row group two ranges share is decoded by both, each keeping its part)."""

    kind = "parquet"

    def __init__(self, path: Path, *, shard: Shard = WHOLE, columns: list[str] | None = None) -> None:
        import pyarrow.parquet as pq

        self.path = path
        self.location = str(path)
        self.shard = shard
        try:
            self._file = pq.ParquetFile(path)
        except (OSError, pa.ArrowException) as exc:
            raise _unreadable(path, "Parquet", exc) from None
        self._columns = columns

    def column_names(self) -> list[str]:
        return list(self._file.schema_arrow.names)

    def select(self, columns: list[str]) -> None:
        """Read only `columns` (those of the model and the keys)."""
        self._columns = columns

    def total_rows(self) -> int:
        start, stop = self.shard.row_range(self._file.metadata.num_rows)
        return stop - start

    def chunks(self, chunk_rows: int) -> Iterator[Chunk]:
        meta = self._file.metadata
        start, stop = self.shard.row_range(meta.num_rows)
        first = 0  # the input row number of the next row group's first row
        for group in range(meta.num_row_groups):
            rows = meta.row_group(group).num_rows
            if first < stop and first + rows > start:
                yield from self._group(group, first, start, stop, chunk_rows)
            first += rows

    def _group(self, group: int, first: int, start: int, stop: int, chunk_rows: int) -> Iterator[Chunk]:
        """The rows of row group `group` (its first row is input row `first`) within `[start, stop)`."""
        try:
            for batch in self._file.iter_batches(
                batch_size=chunk_rows, row_groups=[group], columns=self._columns, use_threads=False
            ):
                end = first + batch.num_rows
                lo, hi = max(start - first, 0), min(stop, end) - first
                if hi > lo:  # some of this shard's rows (none: a range before this batch, or empty)
                    yield Chunk(
                        first + lo, batch if (lo, hi) == (0, batch.num_rows) else batch.slice(lo, hi - lo)
                    )
                first = end
                if first >= stop:
                    return
        except (OSError, pa.ArrowException) as exc:
            raise _unreadable(self.path, "Parquet", exc) from None

    def digest(self) -> str:
        meta = self._file.metadata
        h = hashlib.sha256(str(self._file.schema_arrow).encode())
        for g in range(meta.num_row_groups):
            h.update(repr(meta.row_group(g).to_dict()).encode())
        return h.hexdigest()[:16]


class CsvSource:
    """A CSV file with a header; a shard reads the blocks b with b mod N = index (all blocks are parsed)."""

    kind = "csv"

    def __init__(
        self, path: Path, *, shard: Shard = WHOLE, column_types: dict[str, pa.DataType] | None = None
    ) -> None:
        self.path = path
        self.location = str(path)
        self.shard = shard
        self.column_types = column_types or {}
        try:
            with path.open("rb") as f:
                header = f.readline().decode("utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise _unreadable(path, "CSV", exc) from None
        if not header:
            raise InvalidInputError(f"input {path!s} has no CSV header line")
        self._names = [n.strip().strip('"') for n in header.split(",")]

    def column_names(self) -> list[str]:
        return list(self._names)

    def chunks(self, chunk_rows: int) -> Iterator[Chunk]:
        from pyarrow import csv

        block = max(1 << 16, chunk_rows * max(1, len(self._names)) * _CSV_BYTES_PER_VALUE)
        types = {k: v for k, v in self.column_types.items() if k in self._names}
        try:
            reader = csv.open_csv(
                self.path,
                read_options=csv.ReadOptions(block_size=block, use_threads=False),
                convert_options=csv.ConvertOptions(column_types=types),
            )
            first = 0
            for position, batch in enumerate(reader):
                if self.shard.owns(position):
                    yield Chunk(first, batch)
                first += batch.num_rows
        except (OSError, pa.ArrowException) as exc:
            raise _unreadable(self.path, "CSV", exc) from None

    def digest(self) -> str:
        h = hashlib.sha256()
        with self.path.open("rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
        return h.hexdigest()[:16]


class SqlSource:
    """The rows of a query (a SQLAlchemy URL); a shard reads one contiguous range of the integer column
    `shard_key` (`Shard.key_bounds` over the key's min and max, read with one query first), so an index on
    the key serves each shard. The query's rows must not change while the batch's shards run (the ranges
    follow its min and max)."""

    kind = "sql"

    def __init__(self, url: str, query: str, *, shard: Shard = WHOLE, shard_key: str | None = None) -> None:
        import sqlalchemy as sa

        if not shard.whole and not shard_key:
            raise InvalidInputError("a query is split into shards by an integer column: give --shard-key")
        try:
            self._engine = sa.create_engine(url)
        except (sa.exc.ArgumentError, ImportError, ValueError) as exc:
            raise InvalidInputError(f"--url is not a usable SQLAlchemy URL ({type(exc).__name__})") from None
        self.location = self._engine.url.render_as_string(hide_password=True)
        self.query = query
        self.shard = shard
        self.shard_key = shard_key
        self._names: list[str] = []
        self._statement: str | None = None

    def _inner(self) -> str:
        return self.query.strip().rstrip(";")

    def _key(self) -> str:
        assert self.shard_key is not None
        return "modelloop_q." + self._engine.dialect.identifier_preparer.quote(self.shard_key)

    def statement(self) -> str:
        """The query as run: for a shard, wrapped with its key range (the first range also holds NULL keys).
        Reads the key's min and max once (the first call)."""
        if self._statement is None:
            self._statement = self._inner()
            if not self.shard.whole and self.shard_key is not None:
                key = self._key()
                lower, upper = self.shard.key_bounds(*self._key_range())
                bounds = [f"{key} >= {lower}"] if lower is not None else []
                bounds += [f"{key} < {upper}"] if upper is not None else []
                where = " AND ".join(bounds)
                if lower is None:
                    where = f"{where} OR {key} IS NULL"
                self._statement = f"SELECT * FROM ({self._statement}) AS modelloop_q WHERE {where}"
        return self._statement

    def _key_range(self) -> tuple[int, int]:
        """The shard key's (min, max) over the query's rows ((0, 0) when it has no keys)."""
        import sqlalchemy as sa

        key = self._key()
        sql = f"SELECT MIN({key}), MAX({key}) FROM ({self._inner()}) AS modelloop_q"
        with self._reading(), self._engine.connect() as conn:
            low, high = conn.execute(sa.text(sql)).one()
        if low is None or high is None:
            return 0, 0
        return self._integer(low), self._integer(high)

    def _integer(self, value: object) -> int:
        from decimal import Decimal

        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, Decimal) and value == value.to_integral_value():
            return int(value)
        raise InvalidInputError(
            f"--shard-key {clip(str(self.shard_key))}: the query's column is not an integer column "
            f"({type(value).__name__}); shards split a query by ranges of an integer key"
        )

    @contextmanager
    def _reading(self) -> Iterator[None]:
        """Database failures as one-line errors: a failing query is the input's fault, else unavailable."""
        import sqlalchemy as sa

        try:
            yield
        except sa.exc.OperationalError as exc:
            if "syntax" in str(exc.orig).lower() or "no such" in str(exc.orig).lower():
                raise InvalidInputError(f"the query fails ({clip(str(exc.orig).splitlines()[0])})") from None
            raise UnavailableError(f"the database at {self.location} is unreachable or failed") from None
        except sa.exc.DBAPIError as exc:
            raise InvalidInputError(f"the query fails ({clip(str(exc.orig).splitlines()[0])})") from None

    def column_names(self) -> list[str]:
        return list(self._names)

    def chunks(self, chunk_rows: int) -> Iterator[Chunk]:
        import sqlalchemy as sa

        first = 0
        try:
            statement = self.statement()
            with self._reading(), self._engine.connect() as conn:
                result = conn.execution_options(stream_results=True, yield_per=chunk_rows).execute(
                    sa.text(statement)
                )
                self._names = [str(k) for k in result.keys()]  # noqa: SIM118 (a Result, not a dict)
                for rows in result.partitions(chunk_rows):
                    columns: list[Any] = list(zip(*rows, strict=True)) if rows else [[] for _ in self._names]
                    batch = pa.RecordBatch.from_arrays(
                        [pa.array(list(c)) for c in columns], names=self._names
                    )
                    yield Chunk(first, batch)
                    first += batch.num_rows
        finally:
            self._engine.dispose()

    def digest(self) -> str:
        return hashlib.sha256(f"{self.location}\n{self.statement()}".encode()).hexdigest()[:16]


def open_source(
    *,
    input_path: Path | None,
    query: str | None,
    url: str | None,
    shard: Shard,
    shard_key: str | None = None,
    column_types: dict[str, pa.DataType] | None = None,
) -> ParquetSource | CsvSource | SqlSource:
    """The source the command line names: `input_path` (.parquet/.pq or .csv) or `query` with `url`."""
    if (input_path is None) == (query is None):
        raise InvalidInputError("give either --input FILE or --query SQL (with --url)")
    if query is not None:
        if not url:
            raise InvalidInputError("--query needs --url (a SQLAlchemy URL of the database)")
        return SqlSource(url, query, shard=shard, shard_key=shard_key)
    assert input_path is not None
    suffix = input_path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return ParquetSource(input_path, shard=shard)
    if suffix == ".csv":
        return CsvSource(input_path, shard=shard, column_types=column_types)
    raise InvalidInputError(f"input {clip(str(input_path))} is neither .parquet nor .csv")


__all__ = ["Chunk", "CsvSource", "ParquetSource", "Source", "SqlSource", "open_source"]
