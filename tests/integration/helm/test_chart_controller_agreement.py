"""The chart and the controller agree: one source of truth for the scoring objects
(deploy/kubernetes/manifests.py).

The chart renders no scoring Deployment itself: its controller does, from the bindings ConfigMap and the
settings in its container. These tests take the rendered controller container, parse its flags with the real
`modelloop controller` command and its environment with the real `ControllerSettings`, load the rendered
bindings file with the real `load_bindings`, render each binding with `render_binding` as the CLI wires it,
and check that what the chart says about scoring pods holds for those objects: the image, the security
contexts, the Services the helm test and the tracking URI name, the NetworkPolicy and PodMonitor selectors
and ports, the prediction-log Secret, the autoscaler. The controller's Role is checked against the
Kubernetes calls the real target and leader elector make, as the API server's RBAC authorizer would: the
Role's namespace against each call's (a cluster-wide call is never granted by a Role), the verbs, and the
resourceNames (which never grant `create` or `list`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from itertools import product
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from modelloop.cli.controller import controller
from modelloop.deploy.bindings import Autoscaling, Binding, load_bindings, parse_bindings
from modelloop.deploy.errors import RolloutFailedError
from modelloop.deploy.kubernetes.leader import LeaseElector
from modelloop.deploy.kubernetes.manifests import Manifest, ServingOptions, render_binding
from modelloop.deploy.kubernetes.target import KubernetesTarget
from modelloop.deploy.settings import ControllerSettings
from modelloop.deploy.target import DeploymentSpec
from tests.unit.deploy.fake_kube import Call, FakeKubeApi

from .conftest import CHART, CI_VALUES, NAMESPACE, RELEASE, by_kind, one, pod_spec, render

PRODUCTION = next(p for p in CI_VALUES if p.stem == "production-values")
TRIAL = next(p for p in CI_VALUES if p.stem == "trial-values")
K8S_VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]
CONTROLLER = f"{RELEASE}-modelloop-controller"
POD_NAME = "ml-modelloop-controller-7d9f-abcde"


def _env(container: Manifest) -> dict[str, str]:
    """The container's environment as the process sees it (downward API resolved; Secret values stubbed)."""
    out = {}
    for item in container.get("env", []):
        if "value" in item:
            out[item["name"]] = str(item["value"])
            continue
        ref = item["valueFrom"]
        if "fieldRef" in ref:
            path = ref["fieldRef"]["fieldPath"]
            out[item["name"]] = {"metadata.namespace": NAMESPACE, "metadata.name": POD_NAME}[path]
        else:
            out[item["name"]] = "from-a-secret"
    return out


class Wiring:
    """What `modelloop controller` builds from the chart's controller container (cli/controller.py)."""

    def __init__(self, objects: list[Manifest], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        dep = one(objects, "Deployment", CONTROLLER)
        [container] = dep["spec"]["template"]["spec"]["containers"]
        self.container = container
        assert container["command"] == ["python", "-m", "modelloop"] and container["args"][0] == "controller"
        params = controller.make_context("controller", list(container["args"][1:])).params
        for name in list(os.environ):
            if name.startswith("MODELLOOP_"):
                monkeypatch.delenv(name)
        for name, value in _env(container).items():
            monkeypatch.setenv(name, value)
        config_map = one(objects, "ConfigMap", f"{CONTROLLER}-bindings")
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        assert Path(params["bindings_file"]).parent == Path(mounts["bindings"])
        bindings_file = tmp_path / "bindings.yaml"
        bindings_file.write_text(config_map["data"][Path(params["bindings_file"]).name], encoding="utf-8")
        flags = {
            k: v
            for k, v in params.items()
            if v is not None and k not in {"once", "webhook_secret_file", "bindings_file"}
        }
        self.settings = ControllerSettings(**flags, bindings_file=bindings_file, webhook_secret="x")
        self.bindings: list[Binding] = load_bindings(self.settings.bindings_file)
        self.options = ServingOptions(
            tracking_uri=self.settings.scoring_tracking_uri or self.settings.tracking_uri,
            prediction_log_secret=self.settings.prediction_log_secret,
            progress_deadline_seconds=self.settings.scoring_progress_deadline_seconds,
            min_ready_seconds=self.settings.scoring_min_ready_seconds,
        )
        self.namespaces = {b.namespace for b in self.bindings if b.target == "kubernetes"}

    def render(self, binding: Binding) -> dict[str, Manifest]:
        objects = render_binding(
            binding,
            image=self.settings.scoring_image,
            version="3",
            challenger_version="4",
            options=self.options,
        )
        return {o["kind"]: o for o in objects}


@pytest.fixture(params=[PRODUCTION, TRIAL], ids=["production", "trial"])
def chart(request: pytest.FixtureRequest, helm_major: str) -> list[Manifest]:
    return render(helm_major, [request.param])


@pytest.fixture
def wiring(chart: list[Manifest], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Wiring:
    return Wiring(chart, tmp_path, monkeypatch)


def test_bindings_reach_the_controller_as_given(chart: list[Manifest], wiring: Wiring) -> None:
    values_file = PRODUCTION if len(wiring.bindings) > 1 else TRIAL
    given = yaml.safe_load(values_file.read_text(encoding="utf-8"))["bindings"]
    assert [(b.name, b.model) for b in wiring.bindings] == [(g["name"], g["model"]) for g in given]
    for binding in wiring.bindings:
        assert binding.target == "kubernetes" and binding.namespace == NAMESPACE
    assert wiring.settings.lease_namespace == NAMESPACE and wiring.settings.identity == POD_NAME
    assert wiring.settings.lease_name == CONTROLLER
    assert wiring.settings.webhook_host == "0.0.0.0"
    service = one(chart, "Service", CONTROLLER)
    assert service["spec"]["ports"][0]["port"] == wiring.settings.webhook_port


def test_scoring_objects_validate_and_use_the_charts_image(chart: list[Manifest], wiring: Wiring) -> None:
    mlflow = one(chart, "Deployment", f"{RELEASE}-modelloop-mlflow")
    image = mlflow["spec"]["template"]["spec"]["containers"][0]["image"]
    assert wiring.settings.scoring_image == image
    for binding in wiring.bindings:
        objects = wiring.render(binding)
        for obj in objects.values():
            assert obj["metadata"]["namespace"] == NAMESPACE
            for version in K8S_VERSIONS:
                kubernetes_validate.validate(obj, version, strict=True)
        [container] = objects["Deployment"]["spec"]["template"]["spec"]["containers"]
        assert container["image"] == image
        assert container["command"] == ["python", "-m", "modelloop"] and container["args"][0] == "serve"


def test_scoring_pods_are_hardened_like_the_charts(chart: list[Manifest], wiring: Wiring) -> None:
    chart_pod = pod_spec(one(chart, "Deployment", CONTROLLER))
    assert chart_pod is not None
    for binding in wiring.bindings:
        pod = wiring.render(binding)["Deployment"]["spec"]["template"]["spec"]
        assert pod["securityContext"] == chart_pod["securityContext"]
        assert pod["containers"][0]["securityContext"] == chart_pod["containers"][0]["securityContext"]
        assert pod["automountServiceAccountToken"] is False
        assert {"name": "tmp", "mountPath": "/tmp"} in pod["containers"][0]["volumeMounts"]


def test_tracking_uri_names_the_charts_mlflow_service(chart: list[Manifest], wiring: Wiring) -> None:
    url = urlsplit(wiring.options.tracking_uri)
    name, namespace, svc = (url.hostname or "").split(".")
    assert (namespace, svc) == (NAMESPACE, "svc")
    service = one(chart, "Service", name)
    assert service["spec"]["ports"][0]["port"] == url.port
    assert service["metadata"]["labels"]["app.kubernetes.io/component"] == "mlflow"
    assert wiring.settings.tracking_uri == wiring.options.tracking_uri
    for binding in wiring.bindings:
        args = wiring.render(binding)["Deployment"]["spec"]["template"]["spec"]["containers"][0]["args"]
        assert args[args.index("--tracking-uri") + 1] == wiring.options.tracking_uri


def test_prediction_log_secret_exists_with_key_url(chart: list[Manifest], wiring: Wiring) -> None:
    name = wiring.options.prediction_log_secret
    assert name
    bundled = [s for s in by_kind(chart, "Secret") if s["metadata"]["name"] == name]
    if bundled:
        assert bundled[0]["stringData"]["url"].startswith("postgresql+psycopg2://")
    else:
        assert name == "modelloop-prediction-log"  # the external Secret named in production-values.yaml
    for binding in wiring.bindings:
        [container] = wiring.render(binding)["Deployment"]["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e for e in container["env"]}
        ref = env["MODELLOOP_PREDICTION_LOG_URL"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": name, "key": "url"}


def test_helm_test_pod_checks_the_first_bindings_scoring_service(
    chart: list[Manifest], wiring: Wiring
) -> None:
    pod = one(chart, "Pod", f"{RELEASE}-modelloop-test")
    args = pod["spec"]["containers"][0]["args"]
    target = args[args.index("--grpc") + 1]
    objects = wiring.render(wiring.bindings[0])
    service = objects["Service"]
    [grpc_port] = [p for p in service["spec"]["ports"] if p["name"] == "grpc"]
    assert target == f"{service['metadata']['name']}.{NAMESPACE}.svc:{grpc_port['port']}"
    [container] = objects["Deployment"]["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert container["readinessProbe"]["grpc"]["port"] == ports[grpc_port["targetPort"]]


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return selector.items() <= labels.items()


def test_network_policies_and_pod_monitor_select_scoring_pods() -> None:
    chart = render("v3", [PRODUCTION], ["postgresql.bundled.enabled=true"])
    objects = Wiring.__new__(Wiring)  # only render(): same wiring as the fixture, fewer steps
    objects.settings = ControllerSettings(webhook_secret="x")
    objects.options = ServingOptions()
    pm = one(chart, "PodMonitor", f"{RELEASE}-modelloop-scoring")
    policy = one(chart, "NetworkPolicy", f"{RELEASE}-modelloop-scoring")
    for binding in load_bindings_from(chart):
        dep = objects.render(binding)["Deployment"]
        labels = dep["spec"]["template"]["metadata"]["labels"]
        [container] = dep["spec"]["template"]["spec"]["containers"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert _matches(pm["spec"]["selector"]["matchLabels"], labels)
        assert pm["spec"]["podMetricsEndpoints"][0]["port"] in ports
        assert _matches(policy["spec"]["podSelector"]["matchLabels"], labels)
        allowed = {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]}
        assert allowed == set(ports.values())
        for name in (f"{RELEASE}-modelloop-mlflow", f"{RELEASE}-modelloop-postgresql"):
            rule = one(chart, "NetworkPolicy", name)["spec"]["ingress"][0]
            assert any(_matches(f["podSelector"]["matchLabels"], labels) for f in rule["from"]), name


def load_bindings_from(chart: list[Manifest]) -> list[Binding]:
    import yaml

    config_map = one(chart, "ConfigMap", f"{CONTROLLER}-bindings")
    return parse_bindings(yaml.safe_load(config_map["data"]["bindings.yaml"]))


def test_autoscaler_follows_the_binding(wiring: Wiring) -> None:
    for binding in wiring.bindings:
        objects = wiring.render(binding)
        hpa = objects.get("HorizontalPodAutoscaler")
        if binding.autoscaling is None:
            assert hpa is None and objects["Deployment"]["spec"]["replicas"] == binding.replicas
            continue
        assert hpa is not None and "replicas" not in objects["Deployment"]["spec"]
        spec = hpa["spec"]
        assert spec["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": objects["Deployment"]["metadata"]["name"],
        }
        assert (spec["minReplicas"], spec["maxReplicas"]) == (
            binding.autoscaling.min,
            binding.autoscaling.max,
        )
        target = spec["metrics"][0]["resource"]["target"]["averageUtilization"]
        assert target == binding.autoscaling.cpu_target
        assert spec["behavior"]["scaleDown"]["stabilizationWindowSeconds"] > 0


# KubeApi call -> the RBAC verbs it needs (server-side apply creates missing objects: patch and create)
VERBS = {
    "apply": {"patch", "create"},
    "get": {"get"},
    "list": {"list"},
    "delete": {"delete"},
    "create": {"create"},
    "replace": {"update"},
}
RESOURCES = {
    "Deployment": ("apps", "deployments"),
    "Service": ("", "services"),
    "HorizontalPodAutoscaler": ("autoscaling", "horizontalpodautoscalers"),
    "PodDisruptionBudget": ("policy", "poddisruptionbudgets"),
    "Lease": ("coordination.k8s.io", "leases"),
}
# requests the authorizer sees without an object name: a rule with resourceNames never grants them
UNNAMED_VERBS = {"create", "list", "watch", "deletecollection"}


class Need(NamedTuple):
    """One RBAC permission a call needs: verb on a resource, in a namespace (None: cluster-wide), on a name
    (None: the verb carries no name)."""

    group: str
    resource: str
    verb: str
    namespace: str | None
    name: str | None

    def __str__(self) -> str:
        name = f" {self.name!r}" if self.name else ""
        where = f" in namespace {self.namespace}" if self.namespace else " cluster-wide"
        return f"{self.verb} {self.group or 'core'}/{self.resource}{name}{where}"


def needs_of(calls: Iterable[Call]) -> set[Need]:
    out = set()
    for call in calls:
        group, resource = RESOURCES[call.kind]
        for verb in VERBS[call.verb]:
            name = None if verb in UNNAMED_VERBS else call.name
            out.add(Need(group, resource, verb, call.namespace if call.namespaced else None, name))
    return out


def rule_grants(rule: Manifest, need: Need) -> bool:
    """Whether one rule of a Role grants `need` (the namespace is the Role's business, see `refusals`)."""
    names: list[str] = rule.get("resourceNames") or []
    return (
        need.group in rule["apiGroups"]
        and need.resource in rule["resources"]
        and need.verb in rule["verbs"]
        and (not names or (need.name is not None and need.name in names))
    )


def refusals(role: Manifest, needs: Iterable[Need]) -> list[str]:
    """Why the API server would refuse each need the Role does not grant (empty: all granted)."""
    namespace = role["metadata"]["namespace"]
    out = []
    for need in sorted(needs, key=str):
        if need.namespace is None:
            out.append(f"{need}: a Role in {namespace} grants nothing cluster-wide")
        elif need.namespace != namespace:
            out.append(f"{need}: the Role is in namespace {namespace}")
        elif not any(rule_grants(rule, need) for rule in role["rules"]):
            out.append(f"{need}: no rule of the Role grants it")
    return out


def unused_grants(role: Manifest, needs: Iterable[Need]) -> list[str]:
    """Each verb, resource and resourceName of the Role no need uses (empty: nothing more than needed)."""
    needs = [n for n in needs if n.namespace == role["metadata"]["namespace"]]
    out = []
    for i, rule in enumerate(role["rules"]):
        for group, resource, verb in product(rule["apiGroups"], rule["resources"], rule["verbs"]):
            used = [n for n in needs if (n.group, n.resource, n.verb) == (group, resource, verb)]
            if not any(rule_grants(rule, n) for n in used):
                out.append(f"rule {i}: {verb} {group or 'core'}/{resource} is never used")
        for name in rule.get("resourceNames") or []:
            if not any(n.name == name and rule_grants(rule, n) for n in needs):
                out.append(f"rule {i}: resourceName {name!r} is never used")
    return out


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def _calls_the_controller_makes(wiring: Wiring) -> list[Call]:
    api, clock = FakeKubeApi(), Clock()
    target = KubernetesTarget(
        api,
        namespaces=wiring.namespaces,
        image=wiring.settings.scoring_image,
        options=wiring.options,
        clock=clock,
        sleep=clock.sleep,
    )
    api.scripts["3"] = ["failed"]
    # every binding with and without an autoscaler (values may change either way on upgrade); the fake
    # reports two ready replicas
    variants = [
        b.model_copy(update=change)
        for b in wiring.bindings
        for change in ({"autoscaling": None, "replicas": 2}, {"autoscaling": Autoscaling(min=1, max=3)})
    ]
    for binding in variants:
        target.create(DeploymentSpec(binding=binding, champion_version="1"), deadline=60)
        target.update(DeploymentSpec(binding=binding, champion_version="2"), deadline=60)
        with pytest.raises(RolloutFailedError, match="rolled back"):
            target.update(DeploymentSpec(binding=binding, champion_version="3"), deadline=60)
        target.list()
        target.delete(binding.name)
        target.delete(binding.name)  # deleting what is gone
    settings = wiring.settings
    for identity in (settings.identity, "other-replica"):
        elector = LeaseElector(
            api, name=settings.lease_name, namespace=settings.lease_namespace, identity=identity, clock=clock
        )
        elector.try_acquire_or_renew()
        elector.try_acquire_or_renew()
        clock.now += 60  # the other replica takes the expired lease over
    return api.calls


def test_controller_role_grants_exactly_the_calls_it_makes(chart: list[Manifest], wiring: Wiring) -> None:
    role = one(chart, "Role", CONTROLLER)
    assert role["metadata"]["namespace"] == NAMESPACE
    # the controller runs as the ServiceAccount bound to this Role, and nothing grants it more cluster-wide
    binding = one(chart, "RoleBinding", CONTROLLER)
    assert binding["metadata"]["namespace"] == NAMESPACE
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": CONTROLLER}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": CONTROLLER, "namespace": NAMESPACE}]
    assert pod_spec(one(chart, "Deployment", CONTROLLER))["serviceAccountName"] == CONTROLLER  # type: ignore[index]
    for crb in by_kind(chart, "ClusterRoleBinding"):
        assert all(s.get("name") != CONTROLLER for s in crb.get("subjects") or []), crb["metadata"]["name"]
    calls = _calls_the_controller_makes(wiring)
    needs = needs_of(calls)
    assert refusals(role, needs) == []  # every call is allowed: namespace, verb and resourceName
    assert unused_grants(role, needs) == []  # and nothing more is granted


def _role(*rules: Manifest) -> Manifest:
    return {"kind": "Role", "metadata": {"name": "r", "namespace": "ns"}, "rules": list(rules)}


LIST_DEPLOYMENTS = {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["list"]}
NAMED_LEASE = {
    "apiGroups": ["coordination.k8s.io"],
    "resources": ["leases"],
    "resourceNames": ["ctl"],
    "verbs": ["get", "update", "create", "list"],
}


@pytest.mark.parametrize(
    ("role", "call", "why"),
    [
        (_role(LIST_DEPLOYMENTS), Call("list", "Deployment", None, None), "grants nothing cluster-wide"),
        (_role(LIST_DEPLOYMENTS), Call("list", "Deployment", "other", None), "the Role is in namespace ns"),
        (_role(NAMED_LEASE), Call("list", "Lease", "ns", None), "no rule"),  # resourceNames never grant list
        (_role(NAMED_LEASE), Call("create", "Lease", "ns", "ctl"), "no rule"),  # ... nor create
        (_role(NAMED_LEASE), Call("get", "Lease", "ns", "another"), "no rule"),
        (_role(LIST_DEPLOYMENTS), Call("get", "Deployment", "ns", "x"), "no rule"),
        (_role(LIST_DEPLOYMENTS), Call("apply", "Deployment", "ns", "x"), "no rule"),
    ],
)
def test_the_role_check_refuses_what_rbac_refuses(role: Manifest, call: Call, why: str) -> None:
    assert any(why in reason for reason in refusals(role, needs_of([call])))


def test_the_role_check_allows_what_rbac_allows_and_flags_extra_grants() -> None:
    role = _role(LIST_DEPLOYMENTS, NAMED_LEASE)
    calls = [Call("list", "Deployment", "ns", None), Call("get", "Lease", "ns", "ctl")]
    assert refusals(role, needs_of(calls)) == []
    assert unused_grants(role, needs_of(calls)) == [
        "rule 1: update coordination.k8s.io/leases is never used",
        "rule 1: create coordination.k8s.io/leases is never used",
        "rule 1: list coordination.k8s.io/leases is never used",
    ]


def _schema_keys(node: dict[str, Any]) -> set[str]:
    return set(node["properties"])


def test_values_schema_for_bindings_matches_the_binding_model() -> None:
    from modelloop.deploy.bindings import Autoscaling, Challenger, Resources

    schema = yaml.safe_load((CHART / "values.schema.json").read_text(encoding="utf-8"))
    item = schema["properties"]["bindings"]["items"]
    # the chart sets target and namespace itself (kubernetes, the release namespace)
    assert _schema_keys(item) == set(Binding.model_fields) - {"target", "namespace"}
    assert set(item["required"]) == {n for n, f in Binding.model_fields.items() if f.is_required()}
    for key, model in (("challenger", Challenger), ("autoscaling", Autoscaling), ("resources", Resources)):
        assert _schema_keys(item["properties"][key]) == set(model.model_fields), key
        assert item["properties"][key]["additionalProperties"] is False
    quantities = item["properties"]["resources"]["properties"]["requests"]
    assert _schema_keys(quantities) == {"cpu", "memory"}
