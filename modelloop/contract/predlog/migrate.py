"""The prediction-log schema under Alembic migrations: `ensure_schema(engine)` brings a database to head.

Every process that opens the prediction log (scoring servers, the monitoring job, `modelloop feedback`)
goes through `ensure_schema`, called by `SqlPredictionLog`; nothing calls `create_all`. Pending revisions
are applied once, by whichever process gets there first; the others wait, then find the schema at head:

- PostgreSQL: one transaction holding `pg_advisory_xact_lock(SCHEMA_LOCK_KEY)` reads the revision and
  migrates. DDL is transactional there, so a process that dies mid-way leaves nothing half done, and the
  lock goes with its transaction. The wait is bounded by `lock_timeout` (PostgreSQL's own setting).
- SQLite: one `BEGIN IMMEDIATE` transaction (SQLite's single writer lock) does the same. The connection's
  busy timeout waits for other writers; "database is locked" beyond it is retried until `lock_timeout`.

A database made by `create_all` before migrations existed (its tables, no version table) is adopted: stamped
at the initial revision, its rows kept. A database at a revision this code does not know (a newer modelloop
migrated it) is refused with `SchemaError`, as is a database holding only some of the tables.

Errors: cannot connect or the connection dropped → `UnavailableError("... database unreachable ...")`;
the lock not granted within `lock_timeout` → `UnavailableError` saying so (retry later); anything else →
`SchemaError`. Two processes starting together never see an error.

The revision lives in `modelloop_predlog_alembic_version`. To change the schema: edit `tables.py`, then add
a revision under `migrations/versions/` (Alembic's `revision --autogenerate`, with `script_location` set to
`modelloop/predlog/migrations` and a database at head, drafts one), and keep the test comparing the head
revision with `tables.metadata` passing.
"""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError

from modelloop.contract.errors import ConfigError, UnavailableError
from modelloop.contract.predlog.tables import VERSION_TABLE, blocks_table, feedback_table

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
INITIAL_REVISION = "0001"
# the key of PostgreSQL's advisory lock taken while migrating: the bytes of "mlpredlg" as a bigint
SCHEMA_LOCK_KEY = int.from_bytes(b"mlpredlg", "big")
DEFAULT_LOCK_TIMEOUT = 120.0
_LEGACY_TABLES = frozenset({blocks_table.name, feedback_table.name})
_PG_LOCK_NOT_AVAILABLE = "55P03"


class SchemaError(ConfigError):
    """The database's prediction-log schema cannot be brought to this code's head (too new, partial, or
    a migration failed); the message says which and what to do."""


def alembic_config(connection: sa.Connection | None = None) -> Config:
    """An Alembic config for the prediction-log migrations, running on `connection` when given."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest revision this code knows."""
    head = ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()
    assert head is not None, "prediction-log migrations have no head"
    return head


def ensure_schema(engine: sa.Engine, *, lock_timeout: float = DEFAULT_LOCK_TIMEOUT) -> str:
    """Bring the prediction-log schema at `engine` to head, once, whoever calls first; return the revision.

    Safe to call from any number of processes and threads at once (see the module docstring for the
    locking and the errors). Cheap when the schema is already at head: one short transaction.
    """
    script = ScriptDirectory(str(MIGRATIONS_DIR))
    try:
        if engine.dialect.name == "postgresql":
            return _under_advisory_lock(engine, script, lock_timeout)
        if engine.dialect.name == "sqlite":
            return _under_sqlite_write_lock(engine, script, lock_timeout)
        with engine.begin() as conn:  # other databases: no lock of ours; start them one at a time
            return _migrate(conn, script)
    except SchemaError:
        raise
    except (OperationalError, InterfaceError) as exc:
        if _lock_not_granted(exc):
            raise UnavailableError(
                f"prediction log schema: another process held the migration lock for over {lock_timeout:g} s",
                retry_after=5.0,
            ) from exc
        raise UnavailableError(f"prediction log database unreachable ({type(exc).__name__})") from exc
    except DBAPIError as exc:
        if exc.connection_invalidated:
            raise UnavailableError(f"prediction log database unreachable ({type(exc).__name__})") from exc
        raise SchemaError(f"prediction log schema migration failed ({type(exc).__name__})") from exc
    except (SQLAlchemyError, CommandError) as exc:
        raise SchemaError(f"prediction log schema migration failed ({type(exc).__name__})") from exc


def _under_advisory_lock(engine: sa.Engine, script: ScriptDirectory, lock_timeout: float) -> str:
    with engine.connect() as conn, conn.begin():
        # SET takes no bind parameters; the value is our own integer
        conn.exec_driver_sql(f"SET LOCAL lock_timeout = {max(1, round(lock_timeout * 1000))}")
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK_KEY})
        return _migrate(conn, script)  # the lock is released when this transaction ends


def _under_sqlite_write_lock(engine: sa.Engine, script: ScriptDirectory, lock_timeout: float) -> str:
    deadline = time.monotonic() + lock_timeout
    delay = 0.05
    while True:
        try:
            with engine.connect() as conn:
                # pysqlite opens no transaction before DDL: take SQLite's writer lock ourselves, so the
                # revision check and the migration are one atomic step (SQLite's DDL is transactional)
                conn.exec_driver_sql("BEGIN IMMEDIATE")
                head = _migrate(conn, script)
                conn.commit()
                return head
        except OperationalError as exc:
            if not _sqlite_locked(exc) or time.monotonic() + delay > deadline:
                raise
            log.debug("prediction log schema: SQLite database locked, retrying in %.2f s", delay)
        time.sleep(delay * (1.0 + random.random()))  # noqa: S311 - jitter, not security
        delay = min(delay * 2, 1.0)


def _migrate(conn: sa.Connection, script: ScriptDirectory) -> str:
    """Inside the lock: refuse an unknown revision, adopt a create_all-era database, upgrade to head."""
    head = script.get_current_head()
    assert head is not None, "prediction-log migrations have no head"
    current = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE}).get_current_heads()
    known = {rev.revision for rev in script.walk_revisions()}
    unknown = [rev for rev in current if rev not in known]
    if unknown:
        raise SchemaError(
            f"prediction log schema is at revision {unknown[0][:64]!r}, newer than this modelloop knows "
            f"(its newest is {head!r}): run a modelloop at least as new as the one that migrated it"
        )
    if current == (head,):
        return head
    config = alembic_config(conn)
    if not current:
        present = _LEGACY_TABLES & set(sa.inspect(conn).get_table_names())
        if present == _LEGACY_TABLES:
            log.info("prediction log schema: adopting tables made before migrations at %s", INITIAL_REVISION)
            command.stamp(config, INITIAL_REVISION)
        elif present:
            missing = sorted(_LEGACY_TABLES - present)
            raise SchemaError(
                f"prediction log database has {', '.join(sorted(present))} but not {', '.join(missing)}: "
                "not a schema modelloop made; point it at an empty database or restore the missing table"
            )
    log.info("prediction log schema: upgrading %s to %s", ",".join(current) or "an empty database", head)
    command.upgrade(config, "head")
    return head


def _lock_not_granted(exc: DBAPIError) -> bool:
    return getattr(exc.orig, "pgcode", None) == _PG_LOCK_NOT_AVAILABLE or _sqlite_locked(exc)


def _sqlite_locked(exc: DBAPIError) -> bool:
    text = str(exc.orig).lower()
    return "database is locked" in text or "database is busy" in text or "database table is locked" in text


__all__ = [
    "DEFAULT_LOCK_TIMEOUT",
    "INITIAL_REVISION",
    "MIGRATIONS_DIR",
    "SCHEMA_LOCK_KEY",
    "SchemaError",
    "alembic_config",
    "ensure_schema",
    "head_revision",
]
