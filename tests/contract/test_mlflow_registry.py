"""The model-registry contract over `MlflowModelRegistry` and a real `mlflow server` on loopback (the
session's server from `tests/conftest.py`), plus what only a remote registry can do: be down."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import mlflow
import pytest
from mlflow.entities import Metric, Param, RunTag

from modelloop.adapters.mlflow_registry import MlflowModelRegistry
from modelloop.contract.errors import ConfigError, ModelLoadError, NotFoundError, UnavailableError
from modelloop.contract.model_registry import ModelRegistry
from modelloop.contract.registry import Role
from modelloop.deploy.mlflow_server import free_port

from .model_registry_contract import Arrange, ModelRegistryContract, missing_run_id, unique

EXPERIMENT = "contract-model-registry"


class MlflowArrange(Arrange):
    """Seeds the server through `MlflowClient`, as training and people do."""

    def __init__(self, url: str) -> None:
        self.client = mlflow.MlflowClient(tracking_uri=url, registry_uri=url)
        self.registry = MlflowModelRegistry(url)
        found = self.client.get_experiment_by_name(EXPERIMENT)
        self.experiment = found.experiment_id if found else self.client.create_experiment(EXPERIMENT)

    def register(self, model: str, *, run_id: str | None = None) -> str:
        if not self.client.search_registered_models(filter_string=f"name = '{model}'"):
            self.client.create_registered_model(model)
        # the server accepts a source only inside the run it names: a version "without a run" gets an empty
        # one
        run_id = run_id or self.add_run(params={}, metrics={}, tags={})
        return str(self.client.create_model_version(model, f"runs:/{run_id}/model", run_id=run_id).version)

    def set_alias(self, model: str, alias: str, version: str) -> None:
        self.client.set_registered_model_alias(model, alias, version)

    def set_stage(self, model: str, version: str, stage: str) -> None:
        with warnings.catch_warnings():  # stages are deprecated; older registries still have them
            warnings.simplefilter("ignore", FutureWarning)
            self.client.transition_model_version_stage(model, version, stage)

    def add_run(self, *, params: dict[str, str], metrics: dict[str, float], tags: dict[str, str]) -> str:
        run_id = self.client.create_run(self.experiment).info.run_id
        self.client.log_batch(
            run_id,
            metrics=[Metric(k, v, 0, 0) for k, v in metrics.items()],
            params=[Param(k, v) for k, v in params.items()],
            tags=[RunTag(k, v) for k, v in tags.items()],
        )
        self.client.set_terminated(run_id)
        return run_id

    def put_artifact(self, run_id: str, path: str, data: bytes) -> None:
        self.client.log_text(run_id, data.decode(), path)


class TestMlflowModelRegistry(ModelRegistryContract):
    @pytest.fixture
    def arrange(self, mlflow_server: str) -> Arrange:
        return MlflowArrange(mlflow_server)


CALLS: list[tuple[str, Callable[[ModelRegistry], object]]] = [
    ("model_exists", lambda r: r.model_exists("m")),
    ("model_tags", lambda r: r.model_tags("m")),
    ("set_model_tags", lambda r: r.set_model_tags("m", {"a": "b"})),
    ("resolve", lambda r: r.resolve("m", "production")),
    ("resolve_role", lambda r: r.resolve_role("m", Role.CHALLENGER)),
    ("version", lambda r: r.version("m", "1")),
    ("set_version_tags", lambda r: r.set_version_tags("m", "1", {"a": "b"})),
    ("run", lambda r: r.run(missing_run_id())),
    ("set_run_tags", lambda r: r.set_run_tags(missing_run_id(), {"a": "b"})),
    ("read_artifact", lambda r: r.read_artifact(missing_run_id(), "x.txt")),
    ("reference_profile", lambda r: r.reference_profile("m", "1")),
]


@pytest.mark.parametrize("call", [c for _, c in CALLS], ids=[n for n, _ in CALLS])
def test_a_registry_that_is_down_is_unavailable(
    call: Callable[[ModelRegistry], object], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    registry = MlflowModelRegistry(f"http://someone:hunter2@127.0.0.1:{free_port()}")
    with pytest.raises(UnavailableError, match=r"MLflow at http://127\.0\.0\.1:\d+ unreachable") as info:
        call(registry)
    assert "hunter2" not in str(info.value) and "someone" not in str(info.value)


def test_an_unsupported_uri_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="htp://nowhere"):
        MlflowModelRegistry("htp://nowhere")


def test_a_model_name_is_clipped_in_messages(mlflow_server: str) -> None:
    registry = MlflowModelRegistry(mlflow_server)
    huge = unique("x" * 5000)
    with pytest.raises(NotFoundError) as info:
        registry.version(huge, "1")
    assert len(str(info.value)) < 300 and "\u2026" in str(info.value)


def test_a_model_loads_through_its_own_uri_only(mlflow_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Serving and the gate load through the adapter; the process-wide tracking URI (here: nobody listens) is
    neither read nor changed."""
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    from tests.models import register_reference_model

    name = unique("load")
    registered = register_reference_model(mlflow_server, name, max_iter=3)
    broken = register_reference_model(mlflow_server, name, broken=True)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    nowhere = f"http://127.0.0.1:{free_port()}"
    with _use_tracking_uri(nowhere):
        registry = MlflowModelRegistry(mlflow_server)
        loaded = registry.load_model(name, registered.version)
        assert loaded.flavour == "sklearn" and hasattr(loaded.model, "predict_proba")
        assert loaded.signature is not None and loaded.signature.inputs is not None
        assert loaded.signature.inputs.has_input_names()
        assert [c.name for c in loaded.signature.inputs.inputs] == list(registered.features.columns)
        with pytest.raises(ModelLoadError, match=f"version {broken.version} cannot be loaded"):
            registry.load_model(name, broken.version)
        assert mlflow.get_tracking_uri() == nowhere
