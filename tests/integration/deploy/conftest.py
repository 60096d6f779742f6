"""Fixtures of the controller's integration tests: a dedicated real `mlflow server` (webhooks to loopback, a
1-second webhook cache so a webhook registered mid-session is used at once; the outage test stops and restarts
it), and real registered versions of the reference model shared by every test of the package."""

from __future__ import annotations

import base64
import secrets
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from modelloop.deploy.mlflow_server import MlflowServer
from tests.models import RegisteredModel, register_reference_model


@dataclass(frozen=True)
class Registered:
    server: MlflowServer
    model: str
    v1: RegisteredModel
    v2: RegisteredModel
    broken: RegisteredModel


@pytest.fixture(scope="session")
def deploy_registry() -> Iterator[Registered]:
    import mlflow

    data_dir = Path(tempfile.mkdtemp(prefix="modelloop-deploy-mlflow-"))
    key = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
    server = MlflowServer(data_dir, webhook_secret_key=key, extra_env={"MLFLOW_WEBHOOK_CACHE_TTL": "1"})
    server.start(timeout=120)
    previous = mlflow.get_tracking_uri()
    try:
        name = "deploy-it"
        v1 = register_reference_model(server.url, name, max_iter=5)
        v2 = register_reference_model(server.url, name, max_iter=6, seed=1)
        broken = register_reference_model(server.url, name, broken=True)
        yield Registered(server=server, model=name, v1=v1, v2=v2, broken=broken)
    finally:
        mlflow.set_tracking_uri(previous)
        server.stop()


@pytest.fixture(autouse=True)
def fast_mlflow_client(monkeypatch: pytest.MonkeyPatch) -> None:
    """What `modelloop controller` sets at its entry point: fail fast, the controller retries itself."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
