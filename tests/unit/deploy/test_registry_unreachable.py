"""The MLflow registry port against an address nobody listens on: `TemporaryError`, never a crash."""

import pytest

from modelloop.deploy.errors import TemporaryError
from modelloop.deploy.mlflow_server import free_port
from modelloop.deploy.registry import MlflowRegistry


def test_unreachable_mlflow_is_temporary(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    registry = MlflowRegistry(f"http://127.0.0.1:{free_port()}", attempts=2, backoff=0.01)
    with pytest.raises(TemporaryError, match="unreachable during resolve m@production") as info:
        registry.resolve("m", alias="production", stage="Production")
    assert info.value.delay > 0
    with pytest.raises(TemporaryError):
        registry.set_version_tags("m", "1", {"modelloop.rollout": "serving"})
