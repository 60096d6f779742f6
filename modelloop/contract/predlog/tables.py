"""The SQL tables of the prediction log, as SQLAlchemy metadata: what the store reads and writes.

The live description of the schema. The database itself is created and changed only by the Alembic
revisions in `migrations/` (applied by `modelloop.contract.predlog.migrate.ensure_schema`); a test checks that
the head revision and this metadata describe the same tables. Change both together: edit these tables,
then add a revision (how: `modelloop.contract.predlog.migrate`).
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

blocks_table = sa.Table(
    "modelloop_prediction_blocks",
    metadata,
    sa.Column(
        "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True
    ),
    sa.Column("model_name", sa.String(256), nullable=False),
    sa.Column("model_version", sa.String(64), nullable=False),
    sa.Column("route", sa.String(32), nullable=False),
    sa.Column("t_start", sa.Float(precision=53), nullable=False),
    sa.Column("t_end", sa.Float(precision=53), nullable=False),
    sa.Column("n_rows", sa.Integer, nullable=False),
    sa.Column("format", sa.String(32), nullable=False),
    sa.Column("payload", sa.LargeBinary, nullable=False),
    sa.Index("ix_modelloop_blocks_model_time", "model_name", "t_start", "t_end"),
)

feedback_table = sa.Table(
    "modelloop_feedback",
    metadata,
    sa.Column("request_id", sa.String(128), primary_key=True),
    sa.Column("model_name", sa.String(256), nullable=True),
    sa.Column("label", sa.Text, nullable=False),
    sa.Column("time", sa.Float(precision=53), nullable=False),
    sa.Index("ix_modelloop_feedback_time", "time"),
)

# Where Alembic keeps the schema's revision. Not Alembic's default `alembic_version`: MLflow's own
# tracking store uses that name, and the two may share one database.
VERSION_TABLE = "modelloop_predlog_alembic_version"

# Tables every modelloop table name starts with; migrations compare and touch nothing else.
TABLE_PREFIX = "modelloop_"

__all__ = ["TABLE_PREFIX", "VERSION_TABLE", "blocks_table", "feedback_table", "metadata"]
