"""The controller end to end on this machine: a real MLflow server delivering real signed webhooks, the local
target running real `modelloop serve` subprocesses, real gRPC calls.

The tests share one controller-less registry (the session fixture) and run in file order; each builds its own
controller and target and leaves the aliases as it found them where later tests rely on it.
"""

from __future__ import annotations

import json
import secrets
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import mlflow
import pytest
from matplotlib.image import imread

from modelloop.client import ScoringClient
from modelloop.contract.registry import (
    DEPLOYMENTS_EXPERIMENT,
    TAG_ROLLOUT,
    TAG_ROLLOUT_BINDING,
    TAG_ROLLOUT_REASON,
    TAG_ROLLOUT_SERVING_FROM,
)
from modelloop.deploy.bindings import parse_bindings
from modelloop.deploy.controller import Controller
from modelloop.deploy.local import LocalTarget
from modelloop.deploy.mlflow_server import MlflowServer
from modelloop.deploy.reconcile import Outcome
from modelloop.deploy.registry import MlflowRegistry
from modelloop.deploy.target import DeploymentSpec, DeploymentState
from modelloop.deploy.webhook import sign
from modelloop.deploy.webhook_registration import register_webhook

from .conftest import Registered


def wait_for(predicate: Callable[[], bool], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def rows(reg: Registered) -> list[dict[str, float]]:
    return [{k: float(v) for k, v in r.items()} for r in reg.v1.features.head(2).to_dict(orient="records")]


def champion(target: LocalTarget, name: str, model: str) -> str | None:
    client = ScoringClient(target.address(name), admin_token=target.admin_token)
    try:
        for m in client.list_models():
            if field(m, "name") == model:
                return str(field(m, "champion_version"))
        return None
    finally:
        client.close()


def field(item: object, key: str) -> object:
    """A field of a `list_models()` entry (an object or a mapping)."""
    return item[key] if isinstance(item, dict) else getattr(item, key)


@pytest.fixture
def target(tmp_path: Path, deploy_registry: Registered) -> Iterator[LocalTarget]:
    t = LocalTarget(tracking_uri=deploy_registry.server.url, work_dir=tmp_path / "serving")
    try:
        yield t
    finally:
        t.close()


@pytest.fixture
def client(deploy_registry: Registered) -> mlflow.MlflowClient:
    return mlflow.MlflowClient(deploy_registry.server.url)


def binding(reg: Registered, name: str = "it") -> list:  # type: ignore[type-arg]
    return parse_bindings({"bindings": [{"name": name, "model": reg.model}]})


def test_promotions_by_webhook_under_load_then_rollback(
    deploy_registry: Registered, target: LocalTarget, client: mlflow.MlflowClient
) -> None:
    reg = deploy_registry
    secret = secrets.token_urlsafe(24)
    ctl = Controller(
        binding(reg),
        MlflowRegistry(reg.server.url),
        {"local": target},
        poll_interval=3600,
        webhook_secret=secret,
        rollout_deadline=90,
    )
    ctl.start()
    try:
        assert ctl.webhook is not None
        register_webhook(reg.server.url, url=ctl.webhook.url, secret=secret)
        time.sleep(1.5)  # MLflow's webhook list cache (1 s in this server)
        client.set_registered_model_alias(reg.model, "production", reg.v1.version)
        wait_for(
            lambda: (s := target.get("it")) is not None and s.champion_version == reg.v1.version,
            timeout=90,
            what="v1 deployed by the webhook",
        )
        assert ctl.webhook.accepted >= 1

        failures: list[BaseException] = []
        calls = [0]
        stop = threading.Event()

        def load() -> None:
            c = ScoringClient(target.address("it"))
            try:
                while not stop.is_set():
                    try:
                        c.predict(reg.model, rows(reg))
                        calls[0] += 1
                    except Exception as exc:
                        failures.append(exc)
            finally:
                c.close()

        threads = [threading.Thread(target=load) for _ in range(3)]
        for t in threads:
            t.start()
        client.set_registered_model_alias(reg.model, "production", reg.v2.version)
        wait_for(
            lambda: champion(target, "it", reg.model) == reg.v2.version, timeout=90, what="v2 swapped in"
        )
        before = calls[0]
        wait_for(lambda: calls[0] > before + 20, timeout=30, what="calls answered by v2")
        stop.set()
        for t in threads:
            t.join()
        assert failures == [] and calls[0] > 50
        # the swap is visible to clients a moment before the controller has written its record (other
        # bindings of other tests may have tagged v2 before: wait for this reconcile to finish)
        wait_for(
            lambda: (
                (r := ctl.last_results.get("it")) is not None
                and r.state is not None
                and r.state.champion_version == reg.v2.version
            ),
            timeout=30,
            what="the v2 rollout reconciled and recorded",
        )
        tags = client.get_model_version(reg.model, reg.v2.version).tags
        assert (
            tags[TAG_ROLLOUT] == "serving"
            and tags[TAG_ROLLOUT_BINDING] == "it"
            and TAG_ROLLOUT_SERVING_FROM in tags
        )
        assert client.get_model_version(reg.model, reg.v1.version).tags[TAG_ROLLOUT] == "retired"
        exp = client.get_experiment_by_name(DEPLOYMENTS_EXPERIMENT)
        assert exp is not None
        runs = client.search_runs(
            [exp.experiment_id],
            f"params.to_version = '{reg.v2.version}' and params.binding = 'it'",
        )
        assert [r.data.params["from_version"] for r in runs] == [reg.v1.version]
        assert_rollout_plot(client, runs[0].info.run_id, reg.server.url, outcome="serving")

        # a version that cannot load: rolled back (v2 keeps serving) and tagged
        client.set_registered_model_alias(reg.model, "production", reg.broken.version)
        wait_for(
            lambda: client.get_model_version(reg.model, reg.broken.version).tags.get(TAG_ROLLOUT) == "failed",
            timeout=120,
            what="broken version tagged failed",
        )
        broken_tags = client.get_model_version(reg.model, reg.broken.version).tags
        assert broken_tags[TAG_ROLLOUT_REASON] and broken_tags[TAG_ROLLOUT_BINDING] == "it"
        assert champion(target, "it", reg.model) == reg.v2.version
        wait_for(
            lambda: bool(
                client.search_runs(
                    [exp.experiment_id],
                    f"params.to_version = '{reg.broken.version}' and params.binding = 'it'",
                )
            ),
            timeout=30,
            what="the failed rollout's run",
        )
        [failed_run] = client.search_runs(
            [exp.experiment_id], f"params.to_version = '{reg.broken.version}' and params.binding = 'it'"
        )
        assert_rollout_plot(client, failed_run.info.run_id, reg.server.url, outcome="failed")
        c = ScoringClient(target.address("it"))
        try:
            c.predict(reg.model, rows(reg))
        finally:
            c.close()
        # the next poll does not try it again
        assert ctl.reconcile_one("it") is not None
        assert ctl.last_results["it"].outcome is Outcome.UNCHANGED
    finally:
        ctl.stop()
        client.set_registered_model_alias(reg.model, "production", reg.v2.version)


def assert_rollout_plot(client: mlflow.MlflowClient, run_id: str, tracking_uri: str, *, outcome: str) -> None:
    """The deployment run carries its timeline (JSON, read back) and the timeline plot (a PNG that opens)."""
    run = client.get_run(run_id)
    assert run.data.params["outcome"] == outcome
    assert run.info.status == ("FINISHED" if outcome == "serving" else "FAILED")
    assert run.data.metrics["rollout.seconds"] > 0
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(
            mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path="modelloop", dst_path=tmp, tracking_uri=tracking_uri
            )
        )
        timeline = json.loads((folder / "rollout_timeline.json").read_text())
        image = imread(folder / "rollout_timeline.png")
    events = [e["event"] for e in timeline]
    assert len(events) == 3 and events[-1] == ("ready" if outcome == "serving" else events[-1])
    assert outcome == "serving" or events[-1].startswith("failed: ")
    offsets = [e["offset_s"] for e in timeline]
    assert offsets[0] == 0 and offsets == sorted(offsets)
    assert abs(offsets[-1] - run.data.metrics["rollout.seconds"]) < 0.01
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 400


def post(url: str, body: str, headers: dict[str, str]) -> int:
    req = urllib.request.Request(
        url, data=body.encode(), headers={"Content-Type": "application/json", **headers}
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_forged_stale_and_replayed_webhooks_change_nothing(
    deploy_registry: Registered, target: LocalTarget, client: mlflow.MlflowClient
) -> None:
    reg = deploy_registry
    secret = "the-real-secret"
    client.set_registered_model_alias(reg.model, "production", reg.v1.version)
    ctl = Controller(
        binding(reg, "hooks"),
        MlflowRegistry(reg.server.url),
        {"local": target},
        poll_interval=3600,
        webhook_secret=secret,
    )
    assert ctl.reconcile_all()["hooks"] is not None
    ctl.start()
    try:
        assert ctl.webhook is not None
        client.set_registered_model_alias(reg.model, "production", reg.v2.version)
        body = json.dumps(
            {
                "entity": "model_version_alias",
                "action": "created",
                "data": {"name": reg.model, "alias": "production", "version": reg.v2.version},
            }
        )
        now = str(int(time.time()))
        forged = {
            "X-MLflow-Delivery-Id": "f1",
            "X-MLflow-Timestamp": now,
            "X-MLflow-Signature": sign("not-the-secret", "f1", now, body),
        }
        old = str(int(time.time()) - 600)
        stale = {
            "X-MLflow-Delivery-Id": "s1",
            "X-MLflow-Timestamp": old,
            "X-MLflow-Signature": sign(secret, "s1", old, body),
        }
        assert post(ctl.webhook.url, body, forged) == 401
        assert post(ctl.webhook.url, body, stale) == 401
        assert post(ctl.webhook.url, body, {}) == 401
        time.sleep(1.0)  # nothing may happen: give a wrongly accepted delivery time to act
        state = target.get("hooks")
        assert state is not None and state.champion_version == reg.v1.version
        assert ctl.webhook.accepted == 0

        valid = {
            "X-MLflow-Delivery-Id": "ok1",
            "X-MLflow-Timestamp": now,
            "X-MLflow-Signature": sign(secret, "ok1", now, body),
        }
        assert post(ctl.webhook.url, body, valid) == 202
        wait_for(
            lambda: (s := target.get("hooks")) is not None and s.champion_version == reg.v2.version,
            timeout=90,
            what="valid webhook reconciled",
        )
        # the replay of an accepted delivery is refused and triggers nothing
        client.set_registered_model_alias(reg.model, "production", reg.v1.version)
        assert post(ctl.webhook.url, body, valid) == 409
        time.sleep(1.0)
        state = target.get("hooks")
        assert state is not None and state.champion_version == reg.v2.version
    finally:
        ctl.stop()
        client.set_registered_model_alias(reg.model, "production", reg.v2.version)


@pytest.mark.filterwarnings("ignore:.*transition_model_version_stage.*:FutureWarning")
def test_poll_picks_up_stage_transition(
    deploy_registry: Registered, target: LocalTarget, client: mlflow.MlflowClient
) -> None:
    reg = deploy_registry
    [b] = parse_bindings(
        {"bindings": [{"name": "staged", "model": reg.model, "alias": "champion-stage-test"}]}
    )
    ctl = Controller([b], MlflowRegistry(reg.server.url), {"local": target}, poll_interval=1.0)
    ctl.start()
    try:
        client.transition_model_version_stage(reg.model, reg.v1.version, "Production")
        wait_for(
            lambda: (s := target.get("staged")) is not None and s.champion_version == reg.v1.version,
            timeout=90,
            what="stage Production served",
        )
        client.transition_model_version_stage(
            reg.model, reg.v2.version, "Production", archive_existing_versions=True
        )
        wait_for(
            lambda: champion(target, "staged", reg.model) == reg.v2.version,
            timeout=90,
            what="stage transition picked up by the poll",
        )
    finally:
        ctl.stop()


def test_mlflow_going_away_and_coming_back(
    deploy_registry: Registered, target: LocalTarget, client: mlflow.MlflowClient
) -> None:
    reg = deploy_registry
    client.set_registered_model_alias(reg.model, "production", reg.v1.version)
    ctl = Controller(
        binding(reg, "outage"),
        MlflowRegistry(reg.server.url, attempts=2, backoff=0.1),
        {"local": target},
        poll_interval=1.0,
        max_backoff=2.0,
    )
    ctl.start()
    try:
        wait_for(lambda: target.get("outage") is not None, timeout=90, what="first deployment")
        reg.server.stop()
        try:
            assert ctl.reconcile_one("outage") is None  # retry later, no exception
            time.sleep(2.0)
            assert all(t.is_alive() for t in ctl._threads)
            c = ScoringClient(target.address("outage"))  # serving goes on without MLflow
            try:
                c.predict(reg.model, rows(reg))
            finally:
                c.close()
        finally:
            reg.server.start(timeout=120)
        client.set_registered_model_alias(reg.model, "production", reg.v2.version)
        wait_for(
            lambda: champion(target, "outage", reg.model) == reg.v2.version,
            timeout=90,
            what="reconcile after MLflow came back",
        )
    finally:
        ctl.stop()


class GoesAwayAfterSwap(LocalTarget):
    """The real local target; the MLflow server is stopped the moment a swap has succeeded, before the
    controller writes anything back (the worst moment for the record)."""

    def __init__(self, server: MlflowServer, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.server = server
        self.armed = threading.Event()
        self.swapped = threading.Event()

    def update(self, spec: DeploymentSpec, *, deadline: float) -> DeploymentState:
        state = super().update(spec, deadline=deadline)
        if self.armed.is_set():
            self.armed.clear()
            self.server.stop()
            self.swapped.set()
        return state


def test_write_backs_wait_for_mlflow_to_come_back(
    deploy_registry: Registered, tmp_path: Path, client: mlflow.MlflowClient
) -> None:
    reg = deploy_registry
    client.set_registered_model_alias(reg.model, "production", reg.v1.version)
    target = GoesAwayAfterSwap(reg.server, tracking_uri=reg.server.url, work_dir=tmp_path / "serving")
    ctl = Controller(
        binding(reg, "late"),
        MlflowRegistry(reg.server.url, attempts=2, backoff=0.1),
        {"local": target},
        poll_interval=1.0,
        max_backoff=2.0,
    )
    ctl.start()
    try:
        wait_for(
            lambda: (
                client.get_model_version(reg.model, reg.v1.version).tags.get(TAG_ROLLOUT_BINDING) == "late"
            ),
            timeout=90,
            what="v1 deployed and recorded",
        )
        target.armed.set()
        client.set_registered_model_alias(reg.model, "production", reg.v2.version)
        assert target.swapped.wait(90), "v2 was not swapped in"
        try:
            wait_for(lambda: ctl.reconciler.pending_writes == 4, timeout=30, what="write-backs kept")
            time.sleep(2.0)  # retries with backoff meanwhile: nothing lost, nothing crashed
            assert ctl.reconciler.pending_writes == 4
            assert all(t.is_alive() for t in ctl._threads)
            assert champion(target, "late", reg.model) == reg.v2.version  # serving goes on
        finally:
            reg.server.start(timeout=120)
        wait_for(lambda: ctl.reconciler.pending_writes == 0, timeout=60, what="write-backs flushed")
        v1_tags = client.get_model_version(reg.model, reg.v1.version).tags
        v2_tags = client.get_model_version(reg.model, reg.v2.version).tags
        assert v2_tags[TAG_ROLLOUT] == "serving" and v2_tags[TAG_ROLLOUT_BINDING] == "late"
        assert v1_tags[TAG_ROLLOUT] == "retired"
        exp = client.get_experiment_by_name(DEPLOYMENTS_EXPERIMENT)
        assert exp is not None
        runs = client.search_runs([exp.experiment_id], "params.binding = 'late'")
        assert sorted((r.data.params["from_version"], r.data.params["to_version"]) for r in runs) == sorted(
            [("", reg.v1.version), (reg.v1.version, reg.v2.version)]
        )
        late = next(r for r in runs if r.data.params["to_version"] == reg.v2.version)
        assert_rollout_plot(client, late.info.run_id, reg.server.url, outcome="serving")
    finally:
        ctl.stop()
        target.close()
