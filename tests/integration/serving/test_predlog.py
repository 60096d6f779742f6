"""The prediction log: every scored instance is written asynchronously (SQLite by default, PostgreSQL), the
request id joins feedback later, and when the database is down serving goes on, records wait in a bounded
buffer and are written when it returns; what overflows is counted in the metrics."""

from __future__ import annotations

import time
import urllib.request

import pytest
import sqlalchemy as sa

from modelloop.client import ScoringClient
from modelloop.contract.predlog import Feedback, SqlPredictionLog

from .conftest import REF, Models
from .test_swap import wait_for


def _metric(port: int | None, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_default_sqlite_log_records_features_predictions_and_request_ids(  # type: ignore[no-untyped-def]
    start_server, models: Models, tmp_path
) -> None:
    server = start_server(prediction_log_url=None, data_dir=tmp_path / "data")
    with ScoringClient(server.address) as client:
        result = client.predict(REF, models.rows(3), request_id="req-1")
        client.predict(REF, models.rows(2))
    url = f"sqlite:///{(tmp_path / 'data' / 'predictions.db').resolve()}"
    store = SqlPredictionLog(url)
    try:
        wait_for(lambda: store.count(REF, 0, time.time() + 60) == 5, timeout=30, what="5 logged rows")
        table = store.read_window(REF, 0, time.time() + 60)
        assert table is not None
        data = table.to_pydict()
        assert data["_request_id"][:3] == ["req-1"] * 3
        assert data["_prediction"][:3] == result.predictions.tolist()
        assert data["mean_radius"][:3] == models.rows(3)["mean_radius"].tolist()
        assert all(latency > 0 for latency in data["_latency_ms"])
        assert set(data["_model_version"]) == {models.v1.version} and set(data["_route"]) == {"champion"}
        store.add_feedback([Feedback(request_id="req-1", label=1, model_name=REF)])
        assert store.read_feedback(model_name=REF) == {"req-1": 1}
        assert _metric(server.metrics_port, "modelloop_serving_predlog_written_records_total") == 5
    finally:
        store.close()


def _set_connections(admin_url: str, url: str, *, allowed: bool) -> None:
    name = sa.make_url(url).database
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(allowed).lower()}'))
        if not allowed:
            conn.execute(
                sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"),
                {"n": name},
            )
    admin.dispose()


def test_database_down_buffers_then_flushes_and_counts_overflow(  # type: ignore[no-untyped-def]
    start_server, models: Models, fresh_postgres_url: str, postgres_admin_url: str
) -> None:
    _set_connections(postgres_admin_url, fresh_postgres_url, allowed=False)
    try:
        server = start_server(prediction_log_url=fresh_postgres_url, predlog_max_buffered=30)
        with ScoringClient(server.address) as client:
            for i in range(10):
                client.predict(REF, models.rows(2), request_id=f"down-{i}")  # serving goes on
            wait_for(
                lambda: _metric(server.metrics_port, "modelloop_serving_predlog_write_errors_total") >= 1,
                timeout=30, what="a failed write",
            )  # fmt: skip
            assert _metric(server.metrics_port, "modelloop_serving_predlog_buffered_records") == 20
            for i in range(10, 20):
                client.predict(REF, models.rows(2), request_id=f"down-{i}")  # 10 more rows fit, then overflow
        assert _metric(server.metrics_port, "modelloop_serving_predlog_buffered_records") == 30
        assert _metric(server.metrics_port, "modelloop_serving_predlog_dropped_records_total") == 10
        assert _metric(server.metrics_port, "modelloop_serving_predlog_written_records_total") == 0
    finally:
        _set_connections(postgres_admin_url, fresh_postgres_url, allowed=True)
    wait_for(
        lambda: _metric(server.metrics_port, "modelloop_serving_predlog_written_records_total") == 30,
        timeout=60, what="the buffer flushed after the database came back",
    )  # fmt: skip
    store = SqlPredictionLog(fresh_postgres_url)
    try:
        table = store.read_window(REF, 0, time.time() + 60)
        assert table is not None and table.num_rows == 30
        assert set(table.column("_request_id").to_pylist()) == {f"down-{i}" for i in range(15)}
    finally:
        store.close()


@pytest.mark.parametrize("url", ["not a url", "nosuchdriver://x"])
def test_a_bad_log_url_is_a_config_error(start_server, url: str) -> None:  # type: ignore[no-untyped-def]
    from modelloop.contract.errors import ConfigError

    with pytest.raises(ConfigError, match="prediction log URL"):
        start_server(prediction_log_url=url)
