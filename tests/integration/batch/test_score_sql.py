"""`modelloop score` from a SQL query into a SQL table (SQLite and PostgreSQL), and a query in shards."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from click.testing import Result

from .conftest import Reference, frame_with_id


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'batch.db'}"
    return str(request.getfixturevalue("fresh_postgres_url"))


def _load(url: str, frame: pd.DataFrame) -> None:
    engine = sa.create_engine(url)
    frame.to_sql("customers", engine, index=False)
    engine.dispose()


def _read(url: str, query: str) -> pd.DataFrame:
    engine = sa.create_engine(url)
    try:
        return pd.read_sql(query, engine)
    finally:
        engine.dispose()


def test_a_query_scored_into_a_table_twice_keeps_one_copy(
    reference: Reference, database: str, run_score: Callable[..., Result]
) -> None:
    frame = frame_with_id(reference)
    frame.loc[5, frame.columns[2]] = None
    _load(database, frame)
    batch_id = "nightly-" + database.split(":", maxsplit=1)[0].split("+", maxsplit=1)[0]
    for _ in range(2):
        done = run_score("--model", reference.ref, "--query", "SELECT * FROM customers", "--url", database,
                         "--output-table", "scores", "--output-url", database, "--key", "customer_id",
                         "--batch-id", batch_id, "--memory-budget", "16M")  # fmt: skip
        assert done.exit_code == 0, done.output
    scored = _read(database, "SELECT * FROM scores ORDER BY customer_id")
    assert len(scored) == len(frame) - 1
    assert set(scored["batch_id"]) == {batch_id}
    expected = np.delete(reference.proba, 5, axis=0)
    np.testing.assert_allclose(scored[["proba_0", "proba_1"]].to_numpy(), expected, rtol=1e-12)
    rejects = _read(database, "SELECT * FROM scores_rejects")
    assert rejects["customer_id"].tolist() == [1005]
    staging = [t for t in sa.inspect(sa.create_engine(database)).get_table_names() if "stage" in t]
    assert staging == []


def test_query_shards_cover_every_row_once_in_key_ranges(
    reference: Reference, database: str, run_score: Callable[..., Result]
) -> None:
    _load(database, frame_with_id(reference))
    for index in range(3):
        done = run_score("--model", reference.ref, "--query", "SELECT * FROM customers", "--url", database,
                         "--output-table", "scores", "--output-url", database, "--key", "customer_id",
                         "--batch-id", "split", "--shards", "3", "--shard-index", str(index),
                         "--shard-key", "customer_id", "--no-record")  # fmt: skip
        assert done.exit_code == 0, done.output
    scored = _read(database, "SELECT customer_id, shard FROM scores ORDER BY customer_id")
    assert scored["customer_id"].tolist() == frame_with_id(reference)["customer_id"].tolist()
    # each shard scored one contiguous key range, in shard order
    assert scored["shard"].is_monotonic_increasing and sorted(set(scored["shard"])) == [0, 1, 2]
