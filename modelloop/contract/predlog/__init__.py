"""The prediction log: one logical record per scored instance, stored as columnar blocks in SQL.

The scoring tier writes blocks (one per flushed batch of records of one model version and route); the
monitoring job reads a window back as one Arrow table; feedback (ground-truth labels keyed by request id)
sits in a table beside it. SQLite by default, PostgreSQL in production: the same schema and code path,
versioned by Alembic migrations that `ensure_schema` applies once, whichever process starts first.
"""

from modelloop.contract.predlog.migrate import SchemaError, ensure_schema, head_revision
from modelloop.contract.predlog.schema import (
    LATENCY_COLUMN,
    META_COLUMNS,
    PREDICTION_COLUMN,
    REQUEST_ID_COLUMN,
    ROUTE_COLUMN,
    TIME_COLUMN,
    VERSION_COLUMN,
    Feedback,
    PredictionBatch,
)
from modelloop.contract.predlog.store import PredictionLogStore, SqlPredictionLog, open_prediction_log

__all__ = [
    "LATENCY_COLUMN",
    "META_COLUMNS",
    "PREDICTION_COLUMN",
    "REQUEST_ID_COLUMN",
    "ROUTE_COLUMN",
    "TIME_COLUMN",
    "VERSION_COLUMN",
    "Feedback",
    "PredictionBatch",
    "PredictionLogStore",
    "SchemaError",
    "SqlPredictionLog",
    "ensure_schema",
    "head_revision",
    "open_prediction_log",
]
