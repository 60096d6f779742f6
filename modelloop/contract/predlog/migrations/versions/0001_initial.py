"""The prediction-log schema as `create_all` made it before migrations: blocks and feedback.

A database that already has these tables and no version table is adopted (stamped at this revision, its
rows kept) by `modelloop.contract.predlog.migrate.ensure_schema`, never created again.

Revision ID: 0001
Revises:
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "modelloop_prediction_blocks",
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
    )
    op.create_index(
        "ix_modelloop_blocks_model_time", "modelloop_prediction_blocks", ["model_name", "t_start", "t_end"]
    )
    op.create_table(
        "modelloop_feedback",
        sa.Column("request_id", sa.String(128), primary_key=True),
        sa.Column("model_name", sa.String(256), nullable=True),
        sa.Column("label", sa.Text, nullable=False),
        sa.Column("time", sa.Float(precision=53), nullable=False),
    )
    op.create_index("ix_modelloop_feedback_time", "modelloop_feedback", ["time"])


def downgrade() -> None:
    op.drop_index("ix_modelloop_feedback_time", table_name="modelloop_feedback")
    op.drop_table("modelloop_feedback")
    op.drop_index("ix_modelloop_blocks_model_time", table_name="modelloop_prediction_blocks")
    op.drop_table("modelloop_prediction_blocks")
