"""The Kubernetes target's apply / wait / rollback logic and the Lease elector, against a fake at the client
boundary; plus the target contract suite over it, and the namespaced calls of `DynamicKubeApi`."""

from collections.abc import Collection
from typing import Any

import pytest

from modelloop.deploy.bindings import parse_bindings
from modelloop.deploy.errors import PermanentError, RolloutFailedError
from modelloop.deploy.kubernetes.api import DynamicKubeApi
from modelloop.deploy.kubernetes.leader import LeaseElector
from modelloop.deploy.kubernetes.manifests import VERSION_ANNOTATION
from modelloop.deploy.kubernetes.target import KubernetesTarget
from modelloop.deploy.target import DeploymentSpec

from .fake_kube import Call, FakeKubeApi
from .target_contract import TargetContract

[BINDING] = parse_bindings(
    {
        "bindings": [
            {
                "name": "churn",
                "model": "m",
                "target": "kubernetes",
                "namespace": "ml",
                "autoscaling": {"min": 2, "max": 4},
            }
        ]
    }
)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def make(api: FakeKubeApi, clock: Clock, namespaces: Collection[str] = ("ml",)) -> KubernetesTarget:
    return KubernetesTarget(
        api, namespaces=namespaces, image="img:1", poll=1.0, clock=clock, sleep=clock.sleep
    )


def spec(version: str) -> DeploymentSpec:
    return DeploymentSpec(binding=BINDING, champion_version=version)


def pinned(api: FakeKubeApi) -> str:
    dep = api.objects[("Deployment", "ml", "modelloop-churn")]
    return str(dep["spec"]["template"]["metadata"]["annotations"][VERSION_ANNOTATION])


def test_create_applies_all_objects_and_waits() -> None:
    api, clock = FakeKubeApi(), Clock()
    api.scripts["1"] = ["progressing", "progressing", "complete"]
    state = make(api, clock).create(spec("1"), deadline=60)
    assert state.champion_version == "1" and state.ready
    applied = [(c.kind, c.name) for c in api.calls if c.verb == "apply"]
    assert applied == [
        ("Deployment", "modelloop-churn"),
        ("Service", "modelloop-churn"),
        ("HorizontalPodAutoscaler", "modelloop-churn"),
        ("PodDisruptionBudget", "modelloop-churn"),
    ]
    assert clock.now > 1_000.0  # it waited for the rollout


def test_progress_deadline_exceeded_rolls_back() -> None:
    api, clock = FakeKubeApi(), Clock()
    target = make(api, clock)
    target.create(spec("1"), deadline=60)
    api.scripts["2"] = ["progressing", "failed"]
    with pytest.raises(RolloutFailedError, match="ProgressDeadlineExceeded"):
        target.update(spec("2"), deadline=600)
    assert pinned(api) == "1"
    state = target.get("churn")
    assert state is not None and state.champion_version == "1"


def test_deadline_without_progress_rolls_back() -> None:
    api, clock = FakeKubeApi(), Clock()
    target = make(api, clock)
    target.create(spec("1"), deadline=60)
    api.scripts["2"] = ["progressing"]
    with pytest.raises(RolloutFailedError, match="not complete within 30s"):
        target.update(spec("2"), deadline=30)
    assert pinned(api) == "1" and clock.now >= 1_030


def test_failed_create_deletes_objects() -> None:
    api, clock = FakeKubeApi(), Clock()
    api.scripts["1"] = ["failed"]
    with pytest.raises(RolloutFailedError):
        make(api, clock).create(spec("1"), deadline=60)
    assert api.objects == {}


def test_reapply_same_version_does_not_bump_generation() -> None:
    api, clock = FakeKubeApi(), Clock()
    target = make(api, clock)
    target.create(spec("1"), deadline=60)
    gen = api.objects[("Deployment", "ml", "modelloop-churn")]["metadata"]["generation"]
    target.update(spec("1"), deadline=60)
    assert api.objects[("Deployment", "ml", "modelloop-churn")]["metadata"]["generation"] == gen


class TestKubernetesTargetContract(TargetContract):
    @pytest.fixture
    def versions(self) -> tuple[str, str, str, str]:
        return ("m", "1", "2", "3")

    @pytest.fixture
    def target(self) -> KubernetesTarget:
        api, clock = FakeKubeApi(), Clock()
        api.scripts["3"] = ["progressing", "failed"]
        return make(api, clock, namespaces=("default", "ml"))  # the contract's bindings are in "default"


def test_every_call_is_namespaced_in_the_managed_namespaces() -> None:
    api, clock = FakeKubeApi(), Clock()
    target = make(api, clock, namespaces={"ml", "team-b"})
    target.create(spec("1"), deadline=60)
    api.scripts["2"] = ["failed"]
    with pytest.raises(RolloutFailedError):
        target.update(spec("2"), deadline=60)
    target.list()
    target.delete("churn")
    assert api.calls and all(c.namespaced for c in api.calls)
    assert {c.namespace for c in api.calls if c.verb != "list"} == {"ml"}
    lists = {c.namespace for c in api.calls if c.verb == "list"}
    assert lists == {"ml", "team-b"}  # one namespaced list per managed namespace, never cluster-wide


def test_deployments_outside_the_managed_namespaces_are_not_seen() -> None:
    api, clock = FakeKubeApi(), Clock()
    make(api, clock, namespaces={"elsewhere"}).create(
        DeploymentSpec(binding=BINDING.model_copy(update={"namespace": "elsewhere"}), champion_version="1"),
        deadline=60,
    )
    target = make(api, clock)
    assert target.get("churn") is None and target.list() == []
    target.delete("churn")
    assert ("Deployment", "elsewhere", "modelloop-churn") in api.objects
    target.create(spec("2"), deadline=60)
    assert [(s.name, s.champion_version) for s in target.list()] == [("churn", "2")]
    both = make(api, clock, namespaces={"ml", "elsewhere"})
    assert sorted(s.champion_version for s in both.list()) == ["1", "2"]


def test_a_binding_outside_the_managed_namespaces_is_refused() -> None:
    api, clock = FakeKubeApi(), Clock()
    with pytest.raises(PermanentError, match="namespace ml is not one this target manages"):
        make(api, clock, namespaces={"other"}).create(spec("1"), deadline=60)
    assert api.objects == {} and not [c for c in api.calls if c.verb == "apply"]


def test_a_target_needs_its_namespaces() -> None:
    with pytest.raises(ValueError, match="namespaces"):
        make(FakeKubeApi(), Clock(), namespaces=())


class _Dynamic:
    """Stands in for `kubernetes.dynamic.DynamicClient`: records the keyword arguments of each call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.resources = self

    def get(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append(("get", kwargs))
        return None

    def delete(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append(("delete", kwargs))
        return None


def test_dynamic_api_lists_in_one_namespace_and_refuses_cluster_wide_calls() -> None:
    api = DynamicKubeApi.__new__(DynamicKubeApi)  # no cluster: the client is a stand-in
    dyn = _Dynamic()
    api._dyn = dyn  # type: ignore[assignment]
    assert api.list("apps/v1", "Deployment", "ml", label_selector="a=b") == []
    assert dyn.calls[-1] == ("get", {"namespace": "ml", "label_selector": "a=b"})
    before = len(dyn.calls)
    for call in (
        lambda: api.list("apps/v1", "Deployment", "", label_selector="a=b"),
        lambda: api.get("apps/v1", "Deployment", "", "x"),
        lambda: api.delete("apps/v1", "Deployment", "", "x"),
        lambda: api.apply({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}}),
    ):
        with pytest.raises(PermanentError, match="cluster-wide calls are not allowed"):
            call()
    assert len(dyn.calls) == before  # refused before reaching the API server


def test_fake_records_namespaces_and_cluster_wide_lists() -> None:
    api = FakeKubeApi()
    api.list("apps/v1", "Deployment", "ml", label_selector="a=b")
    api.list("apps/v1", "Deployment", label_selector="a=b")
    assert api.calls == [
        Call("list", "Deployment", "ml", None, "a=b"),
        Call("list", "Deployment", None, None, "a=b"),
    ]
    assert [c.namespaced for c in api.calls] == [True, False]


def test_lease_election() -> None:
    api, clock = FakeKubeApi(), Clock()
    a = LeaseElector(
        api, name="modelloop-controller", namespace="ml", identity="a", lease_seconds=15, clock=clock
    )
    b = LeaseElector(
        api, name="modelloop-controller", namespace="ml", identity="b", lease_seconds=15, clock=clock
    )
    assert a.try_acquire_or_renew() and a.is_leader()
    assert not b.try_acquire_or_renew() and not b.is_leader()
    clock.now += 10
    assert a.try_acquire_or_renew()  # renewal
    clock.now += 10
    assert not b.try_acquire_or_renew()  # a renewed 10 s ago
    clock.now += 20  # a stopped renewing: its lease expired
    assert not a.is_leader()
    assert b.try_acquire_or_renew() and b.is_leader()
    lease = api.objects[("Lease", "ml", "modelloop-controller")]["spec"]
    assert lease["holderIdentity"] == "b" and lease["leaseTransitions"] == 1
    assert not a.try_acquire_or_renew()


def test_lease_race_conflict_leaves_one_leader() -> None:
    api, clock = FakeKubeApi(), Clock()
    a = LeaseElector(api, name="l", namespace="ml", identity="a", clock=clock)
    b = LeaseElector(api, name="l", namespace="ml", identity="b", clock=clock)
    a.try_acquire_or_renew()
    clock.now += 100
    stale = api.get("coordination.k8s.io/v1", "Lease", "ml", "l")
    assert b.try_acquire_or_renew()
    api.objects[("Lease", "ml", "l")]  # b holds it now; a replaying with the stale resourceVersion conflicts
    assert stale is not None
    stale["spec"]["holderIdentity"] = "a"
    with pytest.raises(Exception, match="changed"):
        api.replace(stale)
    assert not a.try_acquire_or_renew() and b.is_leader()


def test_api_down_means_follower() -> None:
    api, clock = FakeKubeApi(), Clock()
    a = LeaseElector(api, name="l", namespace="ml", identity="a", clock=clock)
    api.down = True
    assert not a.try_acquire_or_renew()


def test_an_owner_labels_its_objects_and_sees_only_those() -> None:
    from modelloop.deploy.kubernetes.manifests import CONTROLLER_LABEL, ServingOptions

    api, clock = FakeKubeApi(), Clock()

    def owned_by(owner: str) -> KubernetesTarget:
        options = ServingOptions(owner=owner)
        return KubernetesTarget(
            api, namespaces=["ml"], image="img:1", options=options, clock=clock, sleep=clock.sleep
        )

    mine, theirs = owned_by("a"), owned_by("b")
    mine.create(spec("1"), deadline=60)
    assert {o["metadata"]["labels"][CONTROLLER_LABEL] for o in api.objects.values()} == {"a"}
    assert [s.name for s in mine.list()] == [BINDING.name]
    assert theirs.list() == [] and theirs.get(BINDING.name) is None
