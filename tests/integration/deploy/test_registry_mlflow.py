"""The registry port over a real MLflow server: resolving aliases, reading tags of missing versions, and a
rollout record written twice (a retry) leaving one run."""

from __future__ import annotations

import time

import mlflow
import pytest

from modelloop.adapters.mlflow_experiments import EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND
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
        target="local",
        address="127.0.0.1:7001",
    )
    registry.record_rollout(record)
    registry.record_rollout(record)  # e.g. the first answer was lost
    client = mlflow.MlflowClient(reg.server.url)
    exp = client.get_experiment_by_name(DEPLOYMENTS_EXPERIMENT)
    assert exp is not None
    assert exp.tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING_KIND  # the UI shows it as model training
    runs = client.search_runs([exp.experiment_id], "params.binding = 'twice'")
    assert [r.data.tags[RUN_TAG_RECORD_ID] for r in runs] == [record.id]
    assert runs[0].info.run_name == f"rollout v{reg.v1.version} → v{reg.v2.version} on twice"
    assert "`127.0.0.1:7001`" in runs[0].data.tags["mlflow.note.content"]
    # the stories of both versions were rewritten: v2 serves on `twice`, v1 was replaced there by v2
    v2 = client.get_model_version(reg.model, reg.v2.version).description
    # the first line lists every binding serving it (other tests of the session add theirs)
    assert f"### Why version {reg.v2.version} exists" in v2
    assert "twice (local)" in v2.splitlines()[0] and "serving on " in v2.splitlines()[0]
    assert "| twice | local | `127.0.0.1:7001` | serving |" in v2
    v1 = client.get_model_version(reg.model, reg.v1.version).description
    assert f"### Why version {reg.v1.version} exists" in v1 and "twice" not in v1  # never rolled out there
    assert runs[0].data.metrics["rollout.seconds"] == pytest.approx(1.5)
    assert_rollout_plot(client, runs[0].info.run_id, reg.server.url, outcome="serving")
