"""One contract suite for the prediction-log store, run over SQLite and a real PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from modelloop.contract.errors import ConfigError, InvalidInputError, UnavailableError
from modelloop.contract.predlog import (
    PREDICTION_COLUMN,
    REQUEST_ID_COLUMN,
    ROUTE_COLUMN,
    TIME_COLUMN,
    VERSION_COLUMN,
    Feedback,
    PredictionBatch,
    SqlPredictionLog,
)
from modelloop.contract.registry import Route


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlPredictionLog]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'log.db'}"
    else:
        url = request.getfixturevalue("fresh_postgres_url")
    s = SqlPredictionLog(url)
    try:
        yield s
    finally:
        s.close()


def _batch(
    t0: float, n: int, *, version: str = "1", route: Route = Route.CHAMPION, prefix: str = "r"
) -> PredictionBatch:
    table = pa.table(
        {
            TIME_COLUMN: pa.array([t0 + i for i in range(n)], pa.float64()),
            REQUEST_ID_COLUMN: pa.array([f"{prefix}{i}" for i in range(n)]),
            PREDICTION_COLUMN: pa.array([i % 2 for i in range(n)], pa.int64()),
            "x": pa.array([float(i) for i in range(n)]),
            "colour": pa.array(["red"] * n),
        }
    )
    return PredictionBatch("m", version, route, table)


def test_window_reads_back_exactly_the_rows_inside(store: SqlPredictionLog) -> None:
    store.write(_batch(100.0, 10))
    store.write(_batch(110.0, 10, version="2", route=Route.SHADOW, prefix="s"))
    table = store.read_window("m", 105.0, 115.0)
    assert table is not None
    assert table.column(TIME_COLUMN).to_pylist() == [float(t) for t in range(105, 115)]
    assert table.column(VERSION_COLUMN).to_pylist() == ["1"] * 5 + ["2"] * 5
    assert table.column(ROUTE_COLUMN).to_pylist() == ["champion"] * 5 + ["shadow"] * 5
    assert table.column("colour").to_pylist() == ["red"] * 10
    assert store.count("m", 0.0, 1000.0) == 20


def test_other_models_and_empty_windows(store: SqlPredictionLog) -> None:
    store.write(_batch(100.0, 3))
    assert store.read_window("other", 0.0, 1e12) is None
    assert store.read_window("m", 200.0, 300.0) is None
    assert store.count("other", 0.0, 1e12) == 0


def test_column_selection_keeps_time(store: SqlPredictionLog) -> None:
    store.write(_batch(100.0, 3))
    table = store.read_window("m", 0.0, 1e12, columns=["x"])
    assert table is not None
    assert set(table.column_names) == {TIME_COLUMN, "x", VERSION_COLUMN, ROUTE_COLUMN}


def test_feedback_upserts_by_request_id(store: SqlPredictionLog) -> None:
    now = time.time()
    assert store.add_feedback([Feedback("r1", 0, "m", now), Feedback("r2", 1, "m", now)]) == 2
    store.add_feedback([Feedback("r1", 1, "m", now)])
    assert store.read_feedback(since=now - 1, model_name="m") == {"r1": 1, "r2": 1}
    assert store.read_feedback(since=now + 10) == {}


def test_batch_without_required_columns_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="_request_id"):
        PredictionBatch("m", "1", Route.CHAMPION, pa.table({TIME_COLUMN: [1.0], PREDICTION_COLUMN: [1]}))


def test_bad_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        SqlPredictionLog("not a url")


def test_unreachable_database_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(UnavailableError):
        SqlPredictionLog("postgresql+psycopg2://nobody:x@127.0.0.1:1/none")
