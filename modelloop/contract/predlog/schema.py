"""The logical schema of the prediction log and of feedback.

A `PredictionBatch` holds many records of one (model, version, route) as an Arrow table: the meta columns
below plus one column per input feature, named after it. Blocks are what the store writes and reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from modelloop.contract.errors import InvalidInputError
from modelloop.contract.registry import Route

TIME_COLUMN = "_time"  # float64, unix seconds when the request was answered
REQUEST_ID_COLUMN = "_request_id"  # string, the caller's request id (or one the server made)
LATENCY_COLUMN = "_latency_ms"  # float64, server-side latency of the request
PREDICTION_COLUMN = "_prediction"  # the model's output for this instance
# Added on read from the block's own fields:
VERSION_COLUMN = "_model_version"
ROUTE_COLUMN = "_route"

META_COLUMNS = (TIME_COLUMN, REQUEST_ID_COLUMN, LATENCY_COLUMN, PREDICTION_COLUMN)
_REQUIRED = (TIME_COLUMN, REQUEST_ID_COLUMN, PREDICTION_COLUMN)


@dataclass(frozen=True)
class PredictionBatch:
    """Records of one model version and route, as one Arrow table (meta columns + feature columns)."""

    model_name: str
    model_version: str
    route: Route
    table: pa.Table

    def __post_init__(self) -> None:
        missing = [c for c in _REQUIRED if c not in self.table.column_names]
        if missing:
            raise InvalidInputError(f"prediction batch lacks column(s) {', '.join(missing)}")
        if not self.model_name or not self.model_version:
            raise InvalidInputError("prediction batch needs a model name and version")

    @property
    def num_rows(self) -> int:
        return int(self.table.num_rows)


@dataclass(frozen=True)
class Feedback:
    """A ground-truth label for one request, arriving after the prediction."""

    request_id: str
    label: Any
    model_name: str | None = None
    time: float | None = None


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
]
