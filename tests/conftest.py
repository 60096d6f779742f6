"""Shared fixtures: one real `mlflow server` per test session, a real PostgreSQL database per session.

PostgreSQL is started by `make test` (tools/ensure-postgres.sh); `MODELLOOP_TEST_POSTGRES_URL` names an admin
connection that may create databases. Nothing here is skipped: a missing service fails the tests that need it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without a control plane to start, the `control_plane` tests are deselected (said in one line)."""
    from tests.kube.control_plane import tool

    if tool() is not None:
        return
    kept = [item for item in items if "control_plane" not in item.keywords]
    dropped = [item for item in items if "control_plane" in item.keywords]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
        config.stash[_NOT_RUN] = len(dropped)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    from tests.kube.control_plane import HOW_TO_RUN

    if config.stash.get(_NOT_RUN, 0):
        terminalreporter.write_line(f"{HOW_TO_RUN} ({config.stash[_NOT_RUN]} deselected)")


_NOT_RUN = pytest.StashKey[int]()


@pytest.fixture(scope="session")
def mlflow_server() -> Iterator[str]:
    """URL of a real `mlflow server` on loopback (SQLite backend, proxied artifacts, webhooks to loopback)."""
    from modelloop.deploy.mlflow_server import MlflowServer

    data_dir = Path(tempfile.mkdtemp(prefix="modelloop-mlflow-"))
    server = MlflowServer(data_dir, webhook_secret_key=_fernet_key())
    server.start(timeout=120)
    try:
        yield server.url
    finally:
        server.stop()


def _fernet_key() -> str:
    import base64

    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()


@pytest.fixture
def tracking_uri(mlflow_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Point MLflow's client (and anything reading MLFLOW_TRACKING_URI) at the session's server."""
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(mlflow_server)
    try:
        yield mlflow_server
    finally:
        mlflow.set_tracking_uri(previous)


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    url = os.environ.get("MODELLOOP_TEST_POSTGRES_URL")
    if not url:
        pytest.fail("MODELLOOP_TEST_POSTGRES_URL is not set: run the tests through `make test`")
    return url


@contextlib.contextmanager
def scratch_database(admin_url: str, prefix: str) -> Iterator[str]:
    """A new PostgreSQL database named `<prefix>_<random>`, its URL yielded, dropped afterwards."""
    name = f"{prefix}_{secrets.token_hex(4)}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield sa.make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(
                sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"),
                {"n": name},
            )
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


@pytest.fixture(scope="session")
def postgres_url(postgres_admin_url: str) -> Iterator[str]:
    """URL of a fresh PostgreSQL database for this test session (dropped at the end)."""
    with scratch_database(postgres_admin_url, "modelloop_test") as url:
        yield url


@pytest.fixture
def fresh_postgres_url(postgres_admin_url: str) -> Iterator[str]:
    """URL of a fresh PostgreSQL database for one test."""
    with scratch_database(postgres_admin_url, "modelloop_t") as url:
        yield url
