"""The MLflow adapters beyond the registry port, against the session's real `mlflow server`: listing versions
and moving aliases (`MlflowModelRegistry`), searching runs (`mlflow_runs`), writing a deployment run once per
record id (`mlflow_rollouts`), putting a webhook by name (`mlflow_webhooks`); and each of them, with the
server down, failing with the port's `UnavailableError`, credentials left out."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import mlflow
import pytest

from modelloop.adapters.mlflow_registry import MlflowModelRegistry
from modelloop.adapters.mlflow_rollouts import DeploymentRun, MlflowRolloutRuns
from modelloop.adapters.mlflow_runs import MlflowRuns
from modelloop.adapters.mlflow_webhooks import MlflowWebhooks
from modelloop.contract.errors import NotFoundError, UnavailableError
from modelloop.deploy.mlflow_server import free_port

from .model_registry_contract import unique
from .test_mlflow_registry import MlflowArrange


def test_versions_aliases_and_set_alias(mlflow_server: str) -> None:
    arrange = MlflowArrange(mlflow_server)
    registry = arrange.registry
    model = unique("versions")
    assert registry.versions(model) == []
    first, second = arrange.register(model), arrange.register(model)
    arrange.register(f"{model}-other")  # a name the search must not confuse with `model`
    registry.set_version_tags(model, second, {"k": "v"})
    assert [(v.version, v.tags.get("k")) for v in registry.versions(model)] == [(first, None), (second, "v")]
    registry.set_alias(model, "production", first)
    registry.set_alias(model, "production", second)  # moved, as in the UI
    assert registry.resolve(model, "production") == second
    assert registry.aliases(model, first) == [] and registry.aliases(model, second) == ["production"]
    with pytest.raises(NotFoundError, match="has no version 99"):
        registry.set_alias(model, "production", "99")
    with pytest.raises(NotFoundError, match="is not registered"):
        registry.aliases(unique("nobody"), "1")


def test_runs_are_searched_by_tags_and_params(mlflow_server: str) -> None:
    arrange = MlflowArrange(mlflow_server)
    runs = MlflowRuns(arrange.registry)
    key = unique("who")
    quoted = 'it\'s "quoted"'
    wanted = arrange.add_run(params={"p": "1"}, metrics={"m": 2.0}, tags={key: quoted})
    arrange.add_run(params={"p": "2"}, metrics={}, tags={key: "it_s _quoted_"})  # matches the LIKE superset
    found = runs.search("contract-model-registry", tags={key: quoted}, params={"p": "1"})
    assert [(r.run_id, r.metrics, r.status) for r in found] == [(wanted, {"m": 2.0}, "FINISHED")]
    assert found[0].start_time > 0
    assert runs.search(unique("no-experiment"), tags={key: quoted}) == []


def test_a_deployment_run_is_written_once_per_record(mlflow_server: str, tmp_path: Path) -> None:
    registry = MlflowModelRegistry(mlflow_server)
    experiment = unique("deployments")
    rollouts = MlflowRolloutRuns(registry, experiment=experiment)
    (tmp_path / "modelloop").mkdir()
    (tmp_path / "modelloop" / "timeline.json").write_text("[]")
    run = DeploymentRun(
        record_id=unique("record"),
        name="it-v2",
        params={"binding": "it"},
        tags={"kind": "deployment"},
        metrics={"rollout.seconds": 1.5},
        metrics_time_ms=1000,
        artifacts=tmp_path,
        failed=True,
    )
    run_id = rollouts.write(run)
    assert rollouts.write(run) == run_id  # a retry continues the same run
    found = MlflowRuns(registry).search(experiment)
    assert [r.run_id for r in found] == [run_id]
    assert found[0].status == "FAILED" and found[0].metrics == {"rollout.seconds": 1.5}
    assert found[0].params == {"binding": "it"} and found[0].tags["kind"] == "deployment"
    artifacts = mlflow.MlflowClient(mlflow_server).list_artifacts(run_id, "modelloop")
    assert [a.path for a in artifacts] == ["modelloop/timeline.json"]


def test_a_webhook_is_put_by_name(mlflow_server: str) -> None:
    webhooks = MlflowWebhooks(MlflowModelRegistry(mlflow_server))
    name = unique("hook")
    events = ["model_version_alias.created"]
    first = webhooks.put(name, url="http://127.0.0.1:9/a", events=events, secret="s", description="d")
    second = webhooks.put(name, url="http://127.0.0.1:9/b", events=events, secret="s", description="d")
    assert first.created and not second.created and first.webhook_id == second.webhook_id
    client = mlflow.MlflowClient(mlflow_server)
    hooks = [w for w in client.list_webhooks(max_results=1000) if w.name == name]
    assert [(h.url, h.description) for h in hooks] == [("http://127.0.0.1:9/b", "d")]
    client.delete_webhook(first.webhook_id)


CALLS: list[tuple[str, Callable[[MlflowModelRegistry], object]]] = [
    ("versions", lambda r: r.versions("m")),
    ("aliases", lambda r: r.aliases("m", "1")),
    ("set_alias", lambda r: r.set_alias("m", "production", "1")),
    ("search", lambda r: MlflowRuns(r).search("e", tags={"k": "v"})),
    ("write", lambda r: MlflowRolloutRuns(r).write(DeploymentRun("id", "n", params={}, tags={}))),
    ("put", lambda r: MlflowWebhooks(r).put("h", url="http://x", events=[], secret="s", description="")),
]


@pytest.mark.parametrize("call", [c for _, c in CALLS], ids=[n for n, _ in CALLS])
def test_a_server_that_is_down_is_unavailable(
    call: Callable[[MlflowModelRegistry], object], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    registry = MlflowModelRegistry(f"http://someone:hunter2@127.0.0.1:{free_port()}")
    with pytest.raises(UnavailableError, match=r"MLflow at http://127\.0\.0\.1:\d+ unreachable") as info:
        call(registry)
    assert "hunter2" not in str(info.value) and "someone" not in str(info.value)
