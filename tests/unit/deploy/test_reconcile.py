"""The controller core against the in-memory target and registry."""

import time

import pytest

from modelloop.contract.registry import (
    TAG_ROLLOUT,
    TAG_ROLLOUT_BINDING,
    TAG_ROLLOUT_REASON,
    TAG_ROLLOUT_SERVING_FROM,
    TAG_ROLLOUT_SERVING_UNTIL,
    TAG_ROLLOUT_TARGET,
)
from modelloop.deploy.bindings import parse_bindings
from modelloop.deploy.controller import Controller
from modelloop.deploy.errors import TemporaryError
from modelloop.deploy.fake import FakeTarget
from modelloop.deploy.reconcile import Outcome, Reconciler
from modelloop.deploy.target import DeploymentSpec, DeploymentState
from modelloop.deploy.webhook import Event

from .memory_registry import MemoryRegistry

[BINDING, CANARY] = parse_bindings(
    {
        "bindings": [
            {"name": "churn", "model": "m"},
            {"name": "canary", "model": "c", "challenger": {"mode": "canary", "share": 0.25}},
        ]
    }
)


@pytest.fixture
def registry() -> MemoryRegistry:
    return MemoryRegistry()


@pytest.fixture
def target() -> FakeTarget:
    return FakeTarget()


def test_create_then_idempotent_then_update(registry: MemoryRegistry, target: FakeTarget) -> None:
    rec = Reconciler(registry, {"local": target})
    assert rec.reconcile(BINDING).outcome is Outcome.NOTHING
    registry.aliases[("m", "production")] = "1"
    first = rec.reconcile(BINDING)
    assert (
        first.outcome is Outcome.CREATED and first.state is not None and first.state.champion_version == "1"
    )
    assert registry.tags[("m", "1")][TAG_ROLLOUT] == "serving"
    assert registry.tags[("m", "1")][TAG_ROLLOUT_BINDING] == "churn"
    assert TAG_ROLLOUT_SERVING_FROM in registry.tags[("m", "1")]
    calls, tags, records = list(target.calls), dict(registry.tags), list(registry.records)
    assert rec.reconcile(BINDING).outcome is Outcome.UNCHANGED
    assert [c for c in target.calls[len(calls) :] if c[0] != "get"] == []
    assert registry.tags == tags and registry.records == records
    registry.aliases[("m", "production")] = "2"
    assert rec.reconcile(BINDING).outcome is Outcome.UPDATED
    assert registry.tags[("m", "1")][TAG_ROLLOUT] == "retired"
    assert [(r.from_version, r.to_version, r.outcome) for r in registry.records] == [
        (None, "1", "serving"),
        ("1", "2", "serving"),
    ]
    assert registry.records[-1].timeline[-1][1] == "ready"
    # start and end of serving, named for what they are: v1 served from its rollout until v2's
    v1, v2 = registry.tags[("m", "1")], registry.tags[("m", "2")]
    assert v1[TAG_ROLLOUT_SERVING_UNTIL] == v2[TAG_ROLLOUT_SERVING_FROM] >= v1[TAG_ROLLOUT_SERVING_FROM]
    assert v2[TAG_ROLLOUT_SERVING_FROM].endswith("Z") and v2[TAG_ROLLOUT_TARGET] == "local"
    assert TAG_ROLLOUT_SERVING_UNTIL not in v2
    assert [r.target for r in registry.records] == ["local", "local"]
    assert registry.records[-1].name == "rollout v1 → v2 on churn"


def test_deprecated_stage_is_honoured(registry: MemoryRegistry, target: FakeTarget) -> None:
    registry.stages[("m", "Production")] = "4"
    result = Reconciler(registry, {"local": target}).reconcile(BINDING)
    assert result.state is not None and result.state.champion_version == "4"


def test_broken_version_keeps_previous_and_is_tagged(registry: MemoryRegistry, target: FakeTarget) -> None:
    rec = Reconciler(registry, {"local": target})
    registry.aliases[("m", "production")] = "1"
    rec.reconcile(BINDING)
    target.broken.add(("m", "2"))
    registry.aliases[("m", "production")] = "2"
    failed = rec.reconcile(BINDING)
    assert failed.outcome is Outcome.FAILED
    assert failed.state is not None and failed.state.champion_version == "1"
    assert registry.tags[("m", "2")][TAG_ROLLOUT] == "failed"
    assert "did not become ready" in registry.tags[("m", "2")][TAG_ROLLOUT_REASON]
    assert registry.records[-1].outcome == "failed"
    # not retried on the next poll while the tag says failed
    n = len(target.calls)
    assert rec.reconcile(BINDING).outcome is Outcome.UNCHANGED
    assert [c for c in target.calls[n:] if c[0] == "update"] == []


def test_challenger_canary(registry: MemoryRegistry, target: FakeTarget) -> None:
    registry.aliases[("c", "production")] = "1"
    registry.aliases[("c", "challenger")] = "2"
    result = Reconciler(registry, {"local": target}).reconcile(CANARY)
    assert result.state is not None
    assert (result.state.challenger_version, result.state.mode) == ("2", "canary")


def test_registry_down_is_temporary_and_records_are_flushed_later(
    registry: MemoryRegistry, target: FakeTarget
) -> None:
    rec = Reconciler(registry, {"local": target})
    registry.down = True
    with pytest.raises(TemporaryError):
        rec.reconcile(BINDING)
    registry.down = False
    registry.aliases[("m", "production")] = "1"
    rec.reconcile(BINDING)
    assert len(registry.records) == 1


class GoesDownAfterSwap(FakeTarget):
    """A target whose update succeeds just as the registry goes away (before anything is written back)."""

    def __init__(self, registry: MemoryRegistry) -> None:
        super().__init__()
        self.registry = registry

    def update(self, spec: DeploymentSpec, *, deadline: float) -> DeploymentState:
        state = super().update(spec, deadline=deadline)
        self.registry.down = True
        return state


def test_write_backs_wait_for_the_registry_in_order(registry: MemoryRegistry) -> None:
    target = GoesDownAfterSwap(registry)
    rec = Reconciler(registry, {"local": target})
    registry.aliases[("m", "production")] = "1"
    rec.reconcile(BINDING)
    registry.aliases[("m", "production")] = "2"
    assert rec.reconcile(BINDING).outcome is Outcome.UPDATED  # the swap happened; the registry is down now
    assert rec.pending_writes == 4  # v1 retired, v2's binding, the record, v2 serving
    assert registry.tags[("m", "1")][TAG_ROLLOUT] == "serving" and ("m", "2") not in registry.tags
    with pytest.raises(TemporaryError):
        rec.reconcile(BINDING)  # still down: kept
    assert rec.pending_writes == 4 and len(registry.records) == 1
    registry.down = False
    assert rec.reconcile(BINDING).outcome is Outcome.UNCHANGED
    assert rec.pending_writes == 0
    assert registry.tags[("m", "2")][TAG_ROLLOUT] == "serving"
    assert registry.tags[("m", "1")][TAG_ROLLOUT] == "retired"
    assert [(r.from_version, r.to_version) for r in registry.records] == [(None, "1"), ("1", "2")]


def test_timeline_phases(registry: MemoryRegistry, target: FakeTarget) -> None:
    registry.aliases[("m", "production")] = "1"
    rec = Reconciler(registry, {"local": target})
    rec.reconcile(BINDING)
    registry.aliases[("m", "production")] = "2"
    rec.reconcile(BINDING)
    events = [e for _, e in registry.records[-1].timeline]
    assert events == [
        "registry and local target read: production names v2",
        "rollout v1 -> v2 on local",
        "ready",
    ]
    times = [t for t, _ in registry.records[-1].timeline]
    assert times == sorted(times)


def wait_for(predicate: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.01)
    raise AssertionError("condition not met in time")


def test_controller_poll_webhook_and_retry(registry: MemoryRegistry, target: FakeTarget) -> None:
    controller = Controller([BINDING, CANARY], registry, {"local": target}, poll_interval=3600)
    registry.aliases[("m", "production")] = "1"
    target.unreachable = True
    controller.start()
    try:
        wait_for(lambda: ("get", "churn") in target.calls)
        target.unreachable = False  # the retry with backoff picks it up
        wait_for(lambda: (s := target.get("churn")) is not None and s.champion_version == "1")
        registry.aliases[("m", "production")] = "2"
        controller.on_event(Event("model_version_alias", "created", {"name": "m", "version": "2"}))
        wait_for(lambda: (s := target.get("churn")) is not None and s.champion_version == "2")
        controller.on_event(Event("model_version_alias", "created", {"name": "unrelated"}))
    finally:
        controller.stop()
    assert target.get("canary") is None


def test_controller_follower_does_nothing(registry: MemoryRegistry, target: FakeTarget) -> None:
    class Follower:
        def start(self) -> None: ...
        def stop(self) -> None: ...
        def is_leader(self) -> bool:
            return False

    registry.aliases[("m", "production")] = "1"
    controller = Controller([BINDING], registry, {"local": target}, leader=Follower())
    assert controller.reconcile_all() == {"churn": None}
    assert target.calls == []


def test_own_tag_events_are_ignored_but_deletions_count(registry: MemoryRegistry, target: FakeTarget) -> None:
    controller = Controller([BINDING], registry, {"local": target})
    controller.on_event(Event("model_version_tag", "set", {"name": "m", "key": "modelloop.rollout"}))
    assert controller._due == {}
    controller.on_event(Event("model_version_tag", "deleted", {"name": "m", "key": "modelloop.rollout"}))
    assert set(controller._due) == {"churn"}


def test_poll_prunes_what_no_binding_names_any_more(registry: MemoryRegistry, target: FakeTarget) -> None:
    registry.aliases[("m", "production")] = "1"
    registry.aliases[("c", "production")] = "1"
    Controller([BINDING, CANARY], registry, {"local": target}).reconcile_all()
    assert {s.name for s in target.list()} == {"churn", "canary"}

    class Follower:
        def start(self) -> None: ...
        def stop(self) -> None: ...
        def is_leader(self) -> bool:
            return False

    follower = Controller([BINDING], registry, {"local": target}, leader=Follower())
    assert follower.prune() == [] and len(target.list()) == 2  # only the leader deletes
    controller = Controller([BINDING], registry, {"local": target})  # "canary" removed from the bindings
    assert controller.prune() == ["canary"]
    assert [s.name for s in target.list()] == ["churn"]
    assert controller.prune() == []
