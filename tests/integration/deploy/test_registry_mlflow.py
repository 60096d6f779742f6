"""The registry port over a real MLflow server: resolving aliases, reading tags of missing versions, and a
rollout record written twice (a retry) leaving one run."""

from __future__ import annotations

import time

import mlflow
import pytest

from modelloop.contract.registry import DEPLOYMENTS_EXPERIMENT
from modelloop.deploy.registry import RUN_TAG_RECORD_ID, MlflowRegistry, RolloutRecord

from .conftest import Registered
from .test_controller_local import assert_rollout_plot


def test_resolve_and_tags(deploy_registry: Registered) -> None:
    reg = deploy_registry
    registry = MlflowRegistry(reg.server.url)
    client = mlflow.MlflowClient(reg.server.url)
    client.set_registered_model_alias(reg.model, "port-test", reg.v1.version)
    assert registry.resolve(reg.model, alias="port-test") == reg.v1.version
    assert registry.resolve(reg.model, alias="no-such-alias") is None
    assert registry.resolve("no-such-model", alias="production") is None
    assert registry.version_tags(reg.model, "999") == {}
    registry.set_version_tags(reg.model, reg.v1.version, {"port.test": "yes"})
    assert registry.version_tags(reg.model, reg.v1.version)["port.test"] == "yes"
    client.delete_registered_model_alias(reg.model, "port-test")


def test_record_written_twice_is_one_run(deploy_registry: Registered) -> None:
    reg = deploy_registry
    registry = MlflowRegistry(reg.server.url)
    now = time.time()
    record = RolloutRecord(
        binding="twice",
        model=reg.model,
        from_version=reg.v1.version,
        to_version=reg.v2.version,
        outcome="serving",
        timeline=[(now, "registry read"), (now + 0.2, "rollout"), (now + 1.5, "ready")],
    )
    registry.record_rollout(record)
    registry.record_rollout(record)  # e.g. the first answer was lost
    client = mlflow.MlflowClient(reg.server.url)
    exp = client.get_experiment_by_name(DEPLOYMENTS_EXPERIMENT)
    assert exp is not None
    runs = client.search_runs([exp.experiment_id], "params.binding = 'twice'")
    assert [r.data.tags[RUN_TAG_RECORD_ID] for r in runs] == [record.id]
    assert runs[0].data.metrics["rollout.seconds"] == pytest.approx(1.5)
    assert_rollout_plot(client, runs[0].info.run_id, reg.server.url, outcome="serving")
