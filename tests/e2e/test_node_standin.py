"""The node stand-in itself, on the real control plane: what the chart tests rely on it doing like a kubelet
(environment from Secrets, ConfigMaps and the downward API; volumes; restarts with back-off and
CrashLoopBackOff; readiness into EndpointSlices; preStop, SIGTERM and the grace period on deletion)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client, config

from tests.kube.control_plane import ControlPlane
from tests.kube.node import NodeStandIn
from tests.kube.proxy import ServiceProxy

pytestmark = pytest.mark.control_plane

SCRIPT = """
import os, signal, sys, time, http.server
env = os.environ
print("GREETING", env["GREETING"], "SECRET", env["SECRET"], "POD", env["POD"], flush=True)
print("FILE", open(sys.argv[1]).read(), flush=True)
def term(*_):
    print("SIGTERM", flush=True)
    time.sleep(1)
    os._exit(0)
signal.signal(signal.SIGTERM, term)
server = http.server.HTTPServer(("0.0.0.0", int(sys.argv[2])), http.server.SimpleHTTPRequestHandler)
server.serve_forever()
"""


def wait_for(what: str, check: Callable[[], Any], timeout: float = 60) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = check()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def core(plane: ControlPlane) -> client.CoreV1Api:
    return client.CoreV1Api(config.new_client_from_config(config_file=str(plane.kubeconfig)))


@pytest.fixture
def namespace(core: client.CoreV1Api) -> str:
    name = f"standin-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": name}})
    wait_for("the default ServiceAccount", lambda: core.list_namespaced_service_account(name).items)
    return name


def status_of(core: client.CoreV1Api, namespace: str, name: str) -> Any:
    return core.read_namespaced_pod(name, namespace).status


def test_env_volumes_readiness_endpoints_and_graceful_deletion(
    core: client.CoreV1Api, namespace: str, node: NodeStandIn
) -> None:
    core.create_namespaced_secret(namespace, {"metadata": {"name": "s"}, "stringData": {"token": "t0p"}})
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "c"}, "data": {"greeting": "hello"}})
    core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "files"}, "data": {"a.txt": "from-a-volume"}}
    )
    pod = {
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {
            "terminationGracePeriodSeconds": 5,
            "containers": [
                {
                    "name": "web",
                    "image": "this-project",
                    "command": ["python", "-c", SCRIPT],
                    "args": ["/etc/files/a.txt", "8000"],
                    "ports": [{"name": "http", "containerPort": 8000}],
                    "env": [
                        {
                            "name": "GREETING",
                            "valueFrom": {"configMapKeyRef": {"name": "c", "key": "greeting"}},
                        },
                        {"name": "SECRET", "valueFrom": {"secretKeyRef": {"name": "s", "key": "token"}}},
                        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    ],
                    "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1},
                    "lifecycle": {"preStop": {"sleep": {"seconds": 1}}},
                    "volumeMounts": [{"name": "files", "mountPath": "/etc/files"}],
                }
            ],
            "volumes": [{"name": "files", "configMap": {"name": "files"}}],
        },
    }
    core.create_namespaced_pod(namespace, pod)
    core.create_namespaced_service(
        namespace,
        {
            "metadata": {"name": "web"},
            "spec": {
                "selector": {"app": "web"},
                "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
            },
        },
    )
    wait_for(
        "the pod Ready",
        lambda: any(
            c.type == "Ready" and c.status == "True"
            for c in status_of(core, namespace, "web").conditions or []
        ),
    )
    status = status_of(core, namespace, "web")
    assert status.phase == "Running" and status.pod_ip.startswith("10.244.")
    assert status.container_statuses[0].ready and status.container_statuses[0].state.running is not None
    log = node.logs(namespace, "web", "web")
    assert "GREETING hello SECRET t0p POD web" in log and "FILE from-a-volume" in log
    proxy = ServiceProxy(node, namespace, "web", "http")
    try:
        wait_for("the Service's ready endpoint", lambda: proxy.ready_endpoints() == [(status.pod_ip, 8000)])
    finally:
        proxy.close()
    began = time.monotonic()
    core.delete_namespaced_pod("web", namespace)

    def gone() -> bool:
        try:
            core.read_namespaced_pod("web", namespace)
        except client.ApiException as exc:
            return exc.status == 404
        return False

    wait_for("the pod removed", gone, 30)
    assert time.monotonic() - began >= 1.0  # the preStop sleep ran first
    assert "SIGTERM" in node.logs(namespace, "web", "web")


def test_a_crashing_container_restarts_with_back_off(
    core: client.CoreV1Api, namespace: str, node: NodeStandIn
) -> None:
    pod = {
        "metadata": {"name": "crash"},
        "spec": {
            "containers": [
                {"name": "c", "image": "this-project", "command": ["python", "-c", "raise SystemExit(3)"]}
            ]
        },
    }
    core.create_namespaced_pod(namespace, pod)

    def backing_off() -> Any:
        [container] = status_of(core, namespace, "crash").container_statuses or [None]
        if container is None or container.state.waiting is None:
            return None
        return container if container.state.waiting.reason == "CrashLoopBackOff" else None

    container = wait_for("CrashLoopBackOff", backing_off, 60)
    assert container.restart_count >= 2 and not container.ready
    assert container.last_state.terminated.exit_code == 3
    assert status_of(core, namespace, "crash").phase == "Running"
    core.delete_namespaced_pod("crash", namespace)


def test_a_job_pod_succeeds_once(core: client.CoreV1Api, namespace: str, node: NodeStandIn) -> None:
    pod = {
        "metadata": {"name": "once"},
        "spec": {
            "restartPolicy": "Never",
            "initContainers": [{"name": "init", "image": "x", "command": ["python", "-c", "print('init')"]}],
            "containers": [{"name": "main", "image": "x", "command": ["python", "-c", "print('main')"]}],
        },
    }
    core.create_namespaced_pod(namespace, pod)
    wait_for("the pod Succeeded", lambda: status_of(core, namespace, "once").phase == "Succeeded")
    assert node.logs(namespace, "once", "init").count("init") >= 1
    assert status_of(core, namespace, "once").container_statuses[0].restart_count == 0
