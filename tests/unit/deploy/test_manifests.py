"""Rendered objects: validated against the official schemas (1.30 and the newest known) and checked for the
properties the issue asks for."""

from typing import Any

import kubernetes_validate
import pytest

from modelloop.deploy.bindings import parse_bindings
from modelloop.deploy.kubernetes.manifests import VERSION_ANNOTATION, ServingOptions, render_binding

[SCALED, FIXED] = parse_bindings(
    {
        "bindings": [
            {
                "name": "churn",
                "model": "churn-model",
                "target": "kubernetes",
                "namespace": "ml",
                "challenger": {"mode": "canary", "share": 0.2},
                "autoscaling": {"min": 2, "max": 6, "cpu_target": 65},
            },
            {"name": "fixed", "model": "m", "target": "kubernetes", "replicas": 3},
        ]
    }
)

VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]


def by_kind(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {o["kind"]: o for o in objects}


@pytest.mark.parametrize("k8s_version", VERSIONS)
@pytest.mark.parametrize("binding", [SCALED, FIXED], ids=["autoscaled", "fixed"])
def test_objects_validate_strictly(k8s_version: str, binding: Any) -> None:
    objects = render_binding(
        binding,
        image="ghcr.io/x/modelloop:1",
        version="3",
        challenger_version="4",
        options=ServingOptions(prediction_log_secret="predlog"),
    )
    for obj in objects:
        kubernetes_validate.validate(obj, k8s_version, strict=True)


def test_autoscaled_binding() -> None:
    objs = by_kind(render_binding(SCALED, image="img", version="3", challenger_version="4"))
    assert set(objs) == {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"}
    dep = objs["Deployment"]
    assert "replicas" not in dep["spec"]
    assert dep["spec"]["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}
    assert dep["spec"]["minReadySeconds"] > 0
    pod = dep["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    [container] = pod["containers"]
    assert container["args"][:3] == ["serve", "--model", "churn-model/3"]
    assert container["args"][3:9] == [
        "--challenger",
        "churn-model/4",
        "--challenger-mode",
        "canary",
        "--canary-share",
        "0.2",
    ]
    assert dep["spec"]["template"]["metadata"]["annotations"][VERSION_ANNOTATION] == "3"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == 8081
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] > pre_stop + ServingOptions().drain_seconds
    sec = container["securityContext"]
    assert sec["allowPrivilegeEscalation"] is False and sec["capabilities"] == {"drop": ["ALL"]}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    hpa = objs["HorizontalPodAutoscaler"]["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 6)
    assert hpa["metrics"][0]["resource"]["target"]["averageUtilization"] == 65
    assert set(hpa["behavior"]) == {"scaleUp", "scaleDown"}
    assert objs["Service"]["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    assert objs["PodDisruptionBudget"]["spec"]["selector"] == dep["spec"]["selector"]
    assert all(o["metadata"]["namespace"] == "ml" for o in objs.values())


def test_fixed_replicas_and_no_hpa() -> None:
    objs = by_kind(render_binding(FIXED, image="img", version="1"))
    assert "HorizontalPodAutoscaler" not in objs
    assert objs["Deployment"]["spec"]["replicas"] == 3
    assert "--challenger" not in objs["Deployment"]["spec"]["template"]["spec"]["containers"][0]["args"]


def test_pure_and_deterministic() -> None:
    assert render_binding(SCALED, image="i", version="2") == render_binding(SCALED, image="i", version="2")
    a = by_kind(render_binding(SCALED, image="i", version="2"))["Deployment"]
    b = by_kind(render_binding(SCALED, image="i", version="3"))["Deployment"]
    assert a["spec"]["template"] != b["spec"]["template"]  # a new version is a new ReplicaSet


@pytest.mark.parametrize("k8s_version", VERSIONS)
def test_lease_validates_strictly(k8s_version: str) -> None:
    from modelloop.deploy.kubernetes.leader import LeaseElector

    from .fake_kube import FakeKubeApi

    api = FakeKubeApi()
    elector = LeaseElector(api, name="modelloop-controller", namespace="ml", identity="pod-a")
    assert elector.try_acquire_or_renew()
    lease = api.objects[("Lease", "ml", "modelloop-controller")]
    kubernetes_validate.validate(
        {k: v for k, v in lease.items() if k in ("apiVersion", "kind", "metadata", "spec")},
        k8s_version,
        strict=True,
    )


def test_scoring_pods_never_serve_the_admin_service() -> None:
    """The version is pinned in the pod spec: no pod is given the admin token that turns hot swap on."""
    from modelloop.deploy.bindings import parse_bindings
    from modelloop.deploy.kubernetes.manifests import render_binding

    [binding] = parse_bindings({"bindings": [{"name": "b", "model": "m", "target": "kubernetes"}]})
    [deployment, *_] = render_binding(binding, image="img:1", version="3", challenger_version=None)
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert not any("admin" in str(a) for a in container["args"])
    assert not any("ADMIN" in e["name"] for e in container["env"])


@pytest.mark.parametrize(
    ("cpu", "workers"), [("500m", "1"), ("1", "1"), ("1.5", "2"), ("2", "2"), ("2500m", "3"), ("4", "4")]
)
def test_workers_follow_the_cpu_limit(cpu: str, workers: str) -> None:
    """One worker process per core of the container's CPU limit, rounded up, at least 1 (issue 14)."""
    [binding] = parse_bindings(
        {"bindings": [{"name": "b", "model": "m", "target": "kubernetes",
                       "resources": {"limits": {"cpu": cpu, "memory": "1Gi"}}}]}
    )  # fmt: skip
    [deployment, *_] = render_binding(binding, image="img:1", version="3")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    args = container["args"]
    assert args[args.index("--workers") + 1] == workers
    assert container["resources"]["limits"]["cpu"] == cpu


def test_no_cpu_limit_leaves_the_servers_default_worker_count() -> None:
    """Without a CPU limit the server counts the CPUs the pod may use itself: no --workers."""
    [deployment, *_] = render_binding(FIXED, image="img:1", version="3")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert "--workers" not in container["args"]
