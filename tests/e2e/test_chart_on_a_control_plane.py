"""The Helm chart as platform engineers run it, on a real Kubernetes control plane (v1.36, RBAC and
PodSecurity on), with the node stand-in running pods as local processes of this project.

`helm install` into a namespace enforcing the Pod Security "restricted" profile, with the chart pointed at
the suite's MLflow server and PostgreSQL on loopback (an external tracking server and database, as with
managed services). The chart's controller Deployment runs on the stand-in with its own ServiceAccount's
token, nothing more privileged. Then, while a client keeps calling through the Service (the kube-proxy
stand-in): promotions roll out with zero failed calls, a version that cannot load fails on its progress
deadline and is rolled back and tagged, the Deployment scales 1 -> 3 -> 1 through the scale subresource under
its PodDisruptionBudget, `helm upgrade` adds and removes a binding, the monitoring ServiceAccount launches a
retraining Job as `deploy/kubernetes/retrain_job.py` does, and `helm uninstall` leaves what the README says it
keeps.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import pytest
import yaml
from kubernetes import client, config
from sklearn.datasets import load_breast_cancer

from modelloop.client import ScoringClient
from modelloop.contract.registry import TAG_ROLLOUT
from modelloop.deploy.kubernetes.retrain_job import cluster_retrainer
from modelloop.monitoring.retrain import RetrainRequest
from tests.integration.helm.conftest import CHART, helm_path
from tests.kube.control_plane import ControlPlane
from tests.kube.node import NodeStandIn, write_token_kubeconfig
from tests.kube.proxy import ServiceProxy
from tests.models import RegisteredModel, register_reference_model

pytestmark = pytest.mark.control_plane

RELEASE = "ml"
FULLNAME = f"{RELEASE}-modelloop"
CONTROLLER = f"{FULLNAME}-controller"
MANAGER = "modelloop-controller"
SCORING_KINDS = ("Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget")


# ----------------------------------------------------------------------------------------------- helpers


class Kube:
    """Typed clients of the admin kubeconfig (the test's own view; the platform never uses it)."""

    def __init__(self, kubeconfig: Path) -> None:
        api = config.new_client_from_config(config_file=str(kubeconfig))
        self.core = client.CoreV1Api(api)
        self.apps = client.AppsV1Api(api)
        self.batch = client.BatchV1Api(api)
        self.policy = client.PolicyV1Api(api)
        self.autoscaling = client.AutoscalingV2Api(api)
        self.rbac = client.RbacAuthorizationV1Api(api)
        self.coordination = client.CoordinationV1Api(api)
        self.raw = api

    def read(self, kind: str, namespace: str, name: str) -> Any | None:
        reader: Callable[..., Any] = {
            "Deployment": self.apps.read_namespaced_deployment,
            "Service": self.core.read_namespaced_service,
            "HorizontalPodAutoscaler": self.autoscaling.read_namespaced_horizontal_pod_autoscaler,
            "PodDisruptionBudget": self.policy.read_namespaced_pod_disruption_budget,
        }[kind]
        try:
            return reader(name, namespace)
        except client.ApiException as exc:
            if exc.status == 404:
                return None
            raise


def wait_for(what: str, check: Callable[[], Any], timeout: float, dump: Callable[[], str] = str) -> Any:
    end = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except client.ApiException:
            value = None
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n{dump()}")
        time.sleep(0.5)


@dataclass
class Caller:
    """Calls the scoring Service from a thread without pause; keeps every answer's version and failure."""

    address: str
    model: str
    rows: list[dict[str, float]]
    answers: list[tuple[float, str]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Caller:
        self._thread = threading.Thread(target=self._run, name="caller", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        with ScoringClient(self.address) as scoring:
            while not self._stop.is_set():
                try:
                    answer = scoring.predict(self.model, self.rows, timeout=10)
                    self.answers.append((time.monotonic(), answer.model_version))
                except Exception as exc:
                    self.failures.append(f"{type(exc).__name__}: {exc}")
                self._stop.wait(0.02)

    def latest(self) -> str | None:
        return self.answers[-1][1] if self.answers else None

    def answered_since(self, since: float) -> set[str]:
        return {version for at, version in self.answers if at >= since}

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)


@dataclass
class Release:
    """One installed chart, its namespace, and what the test needs to reach into it."""

    helm_major: str
    namespace: str
    kube: Kube
    plane: ControlPlane
    node: NodeStandIn
    tracking_uri: str
    model: str
    folder: Path

    def helm(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        home = self.folder / f"helm-{self.helm_major}"
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(home),
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_DATA_HOME": str(home / "data"),
            "KUBECONFIG": str(self.plane.kubeconfig),
        }
        done = subprocess.run(
            [str(helm_path(self.helm_major)), *args, "--namespace", self.namespace],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            check=False,
        )
        assert done.returncode == 0, f"helm {' '.join(args)}:\n{done.stderr}\n{self.dump()}"
        return done

    def values(self, bindings: list[dict[str, Any]]) -> Path:
        values = {
            "image": {"repository": "modelloop", "tag": "e2e"},
            "mlflow": {"external": {"url": self.tracking_uri}},
            "postgresql": {
                "bundled": {"enabled": False},
                "external": {"mlflowSecret": "mlflow-db", "predictionLogSecret": "prediction-log"},
            },
            "controller": {
                "pollInterval": 2,
                "rolloutDeadline": 120,
                "progressDeadlineSeconds": 20,
                "minReadySeconds": 0,
                "logFormat": "text",
            },
            "monitoring": {"enabled": True, "suspend": True, "retrain": True},
            "bindings": bindings,
        }
        path = self.folder / f"values-{uuid.uuid4().hex[:6]}.yaml"
        path.write_text(yaml.safe_dump(values))
        return path

    def install(self, bindings: list[dict[str, Any]]) -> None:
        self.helm(
            "install", RELEASE, str(CHART), "-f", str(self.values(bindings)), "--wait", "--timeout", "240s"
        )

    def upgrade(self, bindings: list[dict[str, Any]]) -> None:
        self.helm(
            "upgrade", RELEASE, str(CHART), "-f", str(self.values(bindings)), "--wait", "--timeout", "240s"
        )

    def deployment(self, binding: str) -> Any | None:
        return self.kube.read("Deployment", self.namespace, f"modelloop-{binding}")

    def serving(self, binding: str, version: str) -> bool:
        """The binding's Deployment pins `version` and its rollout is complete."""
        dep = self.deployment(binding)
        if dep is None:
            return False
        pinned = (dep.spec.template.metadata.annotations or {}).get("modelloop.io/model-version")
        status = dep.status
        desired = dep.spec.replicas or 1
        return bool(
            pinned == version
            and (status.observed_generation or 0) >= dep.metadata.generation
            and (status.updated_replicas or 0) == desired
            and (status.replicas or 0) == desired
            and (status.ready_replicas or 0) == desired
        )

    def pods(self, selector: str) -> list[Any]:
        return list(self.kube.core.list_namespaced_pod(self.namespace, label_selector=selector).items)

    def dump(self) -> str:
        """Pods, their states and the tail of every container log: what a failure message needs."""
        lines = []
        try:
            for pod in self.kube.core.list_namespaced_pod(self.namespace).items:
                states = [
                    (c.name, c.ready, c.restart_count, next(k for k, v in c.state.to_dict().items() if v))
                    for c in pod.status.container_statuses or []
                ]
                lines.append(f"pod {pod.metadata.name} {pod.status.phase} {states}")
                for container in pod.spec.containers:
                    tail = self.node.logs(self.namespace, pod.metadata.name, container.name)[-1500:]
                    lines.append(f"--- {container.name} log tail:\n{tail}")
        except Exception as exc:
            lines.append(f"(no dump: {exc})")
        return "\n".join(lines)


def rows() -> list[dict[str, float]]:
    data = load_breast_cancer(as_frame=True).data
    data.columns = [c.replace(" ", "_") for c in data.columns]
    frame: pd.DataFrame = data.head(1)
    return [{k: float(v) for k, v in row.items()} for row in frame.to_dict(orient="records")]


@dataclass(frozen=True)
class Versions:
    model: str
    v1: RegisteredModel
    v2: RegisteredModel
    broken: RegisteredModel


@pytest.fixture(scope="module")
def versions(mlflow_server: str) -> Iterator[Versions]:
    previous = mlflow.get_tracking_uri()
    model = f"e2e-{uuid.uuid4().hex[:6]}"
    try:
        yield Versions(
            model=model,
            v1=register_reference_model(mlflow_server, model, max_iter=5),
            v2=register_reference_model(mlflow_server, model, max_iter=6, seed=1),
            broken=register_reference_model(mlflow_server, model, broken=True),
        )
    finally:
        mlflow.set_tracking_uri(previous)


def make_namespace(kube: Kube, name: str, prediction_log_url: str) -> None:
    levels = {f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "audit", "warn")}
    kube.core.create_namespace({"metadata": {"name": name, "labels": levels}})
    for secret, key, value in (
        ("prediction-log", "url", prediction_log_url),
        ("mlflow-db", "uri", "postgresql://unused.invalid/mlflow"),  # MLflow is external: never read
    ):
        kube.core.create_namespaced_secret(name, {"metadata": {"name": secret}, "stringData": {key: value}})


@pytest.fixture
def release_factory(
    plane: ControlPlane,
    node: NodeStandIn,
    mlflow_server: str,
    versions: Versions,
    postgres_url: str,
    tmp_path: Path,
) -> Callable[[str], Release]:
    kube = Kube(plane.kubeconfig)

    def make(helm_major: str) -> Release:
        namespace = f"models-{helm_major}-{uuid.uuid4().hex[:4]}"
        make_namespace(kube, namespace, postgres_url)
        return Release(helm_major, namespace, kube, plane, node, mlflow_server, versions.model, tmp_path)

    return make


def binding(name: str, model: str) -> dict[str, Any]:
    return {
        "name": name,
        "model": model,
        "autoscaling": {"min": 1, "max": 3, "cpu_target": 70},
        "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "1Gi"}},
    }


def scoring_objects(rel: Release, name: str) -> dict[str, Any]:
    return {kind: rel.kube.read(kind, rel.namespace, f"modelloop-{name}") for kind in SCORING_KINDS}


# -------------------------------------------------------------------------------------------------- steps


def install_and_promote(rel: Release, versions: Versions) -> ServiceProxy:
    """helm install; the controller under its own ServiceAccount; v1 promoted, applied and answering."""
    rel.install([binding("churn", rel.model)])
    [controller_pod] = wait_for(
        "the controller pod Ready",
        lambda: [p for p in rel.pods("app.kubernetes.io/component=controller") if is_ready(p)],
        180,
        rel.dump,
    )
    assert controller_pod.spec.service_account_name == CONTROLLER
    # it leads through the Lease the chart's Role names, holding it as its own pod
    lease = wait_for(
        "the controller's Lease",
        lambda: rel.kube.coordination.read_namespaced_lease(CONTROLLER, rel.namespace),
        60,
        rel.dump,
    )
    assert lease.spec.holder_identity == controller_pod.metadata.name

    mlflow.MlflowClient(rel.tracking_uri).set_registered_model_alias(
        rel.model, "production", versions.v1.version
    )
    wait_for(
        f"v{versions.v1.version} rolled out", lambda: rel.serving("churn", versions.v1.version), 180, rel.dump
    )
    objects = scoring_objects(rel, "churn")
    for kind, obj in objects.items():
        assert obj is not None, kind
        applied = [m for m in obj.metadata.managed_fields or [] if m.manager == MANAGER]
        assert applied and all(m.operation == "Apply" for m in applied), (kind, obj.metadata.managed_fields)
    assert objects["HorizontalPodAutoscaler"].spec.scale_target_ref.name == "modelloop-churn"
    proxy = ServiceProxy(rel.node, rel.namespace, "modelloop-churn", "grpc")
    with ScoringClient(proxy.address) as scoring:
        answer = wait_for(
            "v1 answering through the Service",
            lambda: _try(lambda: scoring.predict(rel.model, rows(), timeout=10)),
            60,
            rel.dump,
        )
    assert answer.model_version == versions.v1.version
    return proxy


def _try(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception:
        return None


def is_ready(pod: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def uninstall_leaves_what_the_readme_keeps(rel: Release) -> None:
    rel.helm("uninstall", RELEASE, "--wait", "--timeout", "120s")
    ns = rel.namespace

    def left() -> set[tuple[str, str]]:
        found = set()
        lists: dict[str, Callable[..., Any]] = {
            "Deployment": rel.kube.apps.list_namespaced_deployment,
            "StatefulSet": rel.kube.apps.list_namespaced_stateful_set,
            "Service": rel.kube.core.list_namespaced_service,
            "ConfigMap": rel.kube.core.list_namespaced_config_map,
            "Secret": rel.kube.core.list_namespaced_secret,
            "ServiceAccount": rel.kube.core.list_namespaced_service_account,
            "Role": rel.kube.rbac.list_namespaced_role,
            "RoleBinding": rel.kube.rbac.list_namespaced_role_binding,
            "CronJob": rel.kube.batch.list_namespaced_cron_job,
            "HorizontalPodAutoscaler": rel.kube.autoscaling.list_namespaced_horizontal_pod_autoscaler,
            "PodDisruptionBudget": rel.kube.policy.list_namespaced_pod_disruption_budget,
        }
        for kind, lister in lists.items():
            for obj in lister(ns).items:
                found.add((kind, obj.metadata.name))
        return found - {
            ("ConfigMap", "kube-root-ca.crt"),
            ("ConfigMap", "openshift-service-ca.crt"),  # published in every namespace by this build
            ("ServiceAccount", "default"),
            ("Secret", "prediction-log"),  # the test's own
            ("Secret", "mlflow-db"),
        }

    # what README.md says stays: the controller's scoring objects (deleted by the README's second command)
    # and the Secrets marked `helm.sh/resource-policy: keep` (the webhook secret with an external MLflow)
    kept = {(kind, "modelloop-churn") for kind in SCORING_KINDS}
    kept |= {
        ("Secret", s.metadata.name)
        for s in rel.kube.core.list_namespaced_secret(ns).items
        if (s.metadata.annotations or {}).get("helm.sh/resource-policy") == "keep"
    }
    wait_for("only the kept objects left", lambda: left() == kept, 60, lambda: f"left: {sorted(left())}")
    # the README's second command
    selector = f"app.kubernetes.io/managed-by={MANAGER}"
    rel.kube.apps.delete_collection_namespaced_deployment(ns, label_selector=selector)
    for svc in rel.kube.core.list_namespaced_service(ns, label_selector=selector).items:
        rel.kube.core.delete_namespaced_service(svc.metadata.name, ns)
    rel.kube.autoscaling.delete_collection_namespaced_horizontal_pod_autoscaler(ns, label_selector=selector)
    rel.kube.policy.delete_collection_namespaced_pod_disruption_budget(ns, label_selector=selector)
    wait_for(
        "the scoring pods gone",
        lambda: not rel.pods("app.kubernetes.io/name=modelloop-scoring"),
        90,
        rel.dump,
    )


# -------------------------------------------------------------------------------------------------- tests


def test_helm3_install_promote_rollback_scale_upgrade_uninstall(
    release_factory: Callable[[str], Release], versions: Versions
) -> None:
    rel = release_factory("v3")
    registry = mlflow.MlflowClient(rel.tracking_uri)
    proxy = install_and_promote(rel, versions)
    caller = Caller(proxy.address, rel.model, rows()).start()
    try:
        # a promotion under traffic: a rolling update, zero failed calls, answers switch version
        registry.set_registered_model_alias(rel.model, "production", versions.v2.version)
        wait_for("v2 rolled out", lambda: rel.serving("churn", versions.v2.version), 180, rel.dump)
        wait_for("v2 answering", lambda: caller.latest() == versions.v2.version, 60, rel.dump)
        assert caller.failures == []
        assert {versions.v1.version, versions.v2.version} <= {v for _, v in caller.answers}

        # a version that cannot load: progress deadline, rolled back to v2, tagged failed; v2 answers on
        registry.set_registered_model_alias(rel.model, "production", versions.broken.version)
        wait_for(
            "the broken version tagged failed",
            lambda: (
                registry.get_model_version(rel.model, versions.broken.version).tags.get(TAG_ROLLOUT)
                == "failed"
            ),
            240,
            rel.dump,
        )
        wait_for("v2 back", lambda: rel.serving("churn", versions.v2.version), 120, rel.dump)
        since = time.monotonic()
        wait_for("answers after the rollback", lambda: caller.answered_since(since), 30)
        assert caller.answered_since(since) == {versions.v2.version}
        assert caller.failures == []

        scale_under_traffic(rel, caller)
        registry.set_registered_model_alias(rel.model, "production", versions.v2.version)
        upgrades_add_and_remove_a_binding(rel, versions)
        monitoring_account_launches_a_retraining(rel, versions)
        assert caller.failures == []
    finally:
        caller.stop()
        proxy.close()
    uninstall_leaves_what_the_readme_keeps(rel)


def scale_under_traffic(rel: Release, caller: Caller) -> None:
    """1 -> 3 -> 1 replicas through the scale subresource; the PDB refuses a second voluntary eviction."""
    ns, name = rel.namespace, "modelloop-churn"
    selector = "app.kubernetes.io/name=modelloop-scoring,app.kubernetes.io/instance=churn"
    rel.kube.apps.patch_namespaced_deployment_scale(name, ns, {"spec": {"replicas": 3}})
    wait_for("3 ready pods", lambda: len([p for p in rel.pods(selector) if is_ready(p)]) == 3, 120, rel.dump)
    pdb = wait_for(
        "the PDB counting 3 healthy pods",
        lambda: (
            (p := rel.kube.read("PodDisruptionBudget", ns, name)) is not None
            and p.status.current_healthy == 3
            and p.status.disruptions_allowed == 1
            and p
        ),
        60,
    )
    assert pdb.status.expected_pods == 3
    first, second = [p.metadata.name for p in rel.pods(selector) if is_ready(p)][:2]
    rel.kube.core.create_namespaced_pod_eviction(first, ns, {"metadata": {"name": first, "namespace": ns}})
    with pytest.raises(client.ApiException) as refused:
        rel.kube.core.create_namespaced_pod_eviction(
            second, ns, {"metadata": {"name": second, "namespace": ns}}
        )
    assert refused.value.status == 429 and "disruption budget" in json.loads(refused.value.body)["message"]
    wait_for(
        "3 ready pods again", lambda: len([p for p in rel.pods(selector) if is_ready(p)]) == 3, 120, rel.dump
    )
    rel.kube.apps.patch_namespaced_deployment_scale(name, ns, {"spec": {"replicas": 1}})
    wait_for("back to 1 pod", lambda: len(rel.pods(selector)) == 1, 120, rel.dump)
    since = time.monotonic()
    wait_for("answers after scaling", lambda: caller.answered_since(since), 30)
    assert caller.failures == []


def upgrades_add_and_remove_a_binding(rel: Release, versions: Versions) -> None:
    rel.upgrade([binding("churn", rel.model), binding("extra", rel.model)])
    wait_for("the added binding served", lambda: rel.serving("extra", versions.v2.version), 180, rel.dump)
    rel.upgrade([binding("churn", rel.model)])
    wait_for(
        "the removed binding's objects gone",
        lambda: all(obj is None for obj in scoring_objects(rel, "extra").values()),
        120,
        rel.dump,
    )
    assert rel.serving("churn", versions.v2.version)


def monitoring_account_launches_a_retraining(rel: Release, versions: Versions) -> None:
    """What `modelloop monitor --retrain` does in its pod, with a token of the monitoring ServiceAccount."""
    ns = rel.namespace
    account = f"{FULLNAME}-monitor"
    token = rel.kube.core.create_namespaced_service_account_token(
        account, ns, {"spec": {"expirationSeconds": 600}}
    ).status.token
    kubeconfig = write_token_kubeconfig(rel.folder / "monitor.kubeconfig", rel.node.kube, token, namespace=ns)
    template = rel.folder / "job.yaml"
    template.write_text(
        rel.kube.core.read_namespaced_config_map(f"{FULLNAME}-retrain-job", ns).data["job.yaml"]
    )
    launch = cluster_retrainer(template, namespace=ns, kubeconfig=kubeconfig).launch(
        RetrainRequest(
            model_name=rel.model,
            model_version=versions.v2.version,
            training_run_id=versions.v2.run_id,
            config_text="model_name: never-trained\n",
            tracking_uri=rel.tracking_uri,
            monitoring_run_id="e2e" + "0" * 29,
            cause="drift:e2e",
        )
    )
    job = rel.kube.batch.read_namespaced_job(launch.details["job"], ns)
    [config_map] = [
        cm
        for cm in rel.kube.core.list_namespaced_config_map(ns).items
        if any(ref.uid == job.metadata.uid for ref in cm.metadata.owner_references or [])
    ]
    [owner] = config_map.metadata.owner_references
    assert (owner.kind, owner.name, owner.api_version) == ("Job", job.metadata.name, "batch/v1")
    volumes = job.spec.template.spec.volumes
    assert config_map.metadata.name in {v.config_map.name for v in volumes if v.config_map}
    # deleting the Job removes its ConfigMap through the owner reference (the garbage collector)
    rel.kube.batch.delete_namespaced_job(job.metadata.name, ns, propagation_policy="Foreground")
    wait_for(
        "the Job's ConfigMap collected with it",
        lambda: (
            config_map.metadata.name
            not in {c.metadata.name for c in rel.kube.core.list_namespaced_config_map(ns).items}
        ),
        90,
        rel.dump,
    )


def test_helm4_install_promote_uninstall(
    release_factory: Callable[[str], Release], versions: Versions
) -> None:
    rel = release_factory("v4")
    proxy = install_and_promote(rel, versions)
    proxy.close()
    uninstall_leaves_what_the_readme_keeps(rel)
