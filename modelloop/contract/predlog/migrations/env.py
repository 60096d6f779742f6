"""Alembic's environment for the prediction-log schema.

Run by `modelloop.contract.predlog.migrate.ensure_schema`, which passes an open connection (already inside the
transaction that holds the schema lock) as `config.attributes["connection"]`: migrations run in that
transaction, never in one of their own. From the `alembic` command line (for writing new revisions) it
connects to `sqlalchemy.url` instead, or renders SQL with `--sql`.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import context

from modelloop.contract.predlog.tables import TABLE_PREFIX, VERSION_TABLE, metadata


def _include_name(name: str | None, type_: str, _parent: Any) -> bool:
    # autogenerate looks only at modelloop's tables: the database may hold MLflow's too
    return type_ != "table" or (name or "").startswith(TABLE_PREFIX)


def _configure(connection: sa.Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        include_name=_include_name,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )


def _run() -> None:
    config = context.config
    connection = config.attributes.get("connection")
    if context.is_offline_mode():
        context.configure(
            url=config.get_main_option("sqlalchemy.url"),
            target_metadata=metadata,
            version_table=VERSION_TABLE,
            literal_binds=True,
        )
        with context.begin_transaction():
            context.run_migrations()
    elif connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
    else:
        engine = sa.create_engine(str(config.get_main_option("sqlalchemy.url")), poolclass=sa.NullPool)
        with engine.connect() as conn:
            _configure(conn)
            with context.begin_transaction():
                context.run_migrations()
        engine.dispose()


_run()
