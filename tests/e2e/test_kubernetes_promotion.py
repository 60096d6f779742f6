"""The whole promotion against a real cluster: the controller with the Kubernetes target rolls out v1, then
v2, and rolls a broken version back (tagged failed), with Lease leader election on.

Wired as `modelloop controller` wires it: the target lists only in the binding's namespace, the scoring
options and the Lease name come from `ControllerSettings` (the chart's Role grants `get`/`update` on the
Lease named like its controller, `MODELLOOP_LEASE_NAME`; without it, the settings' default)."""

from __future__ import annotations

import os
import time
import uuid

import mlflow
import pytest

from modelloop.contract.registry import TAG_ROLLOUT
from modelloop.deploy.bindings import parse_bindings
from modelloop.deploy.controller import Controller
from modelloop.deploy.kubernetes.api import DynamicKubeApi
from modelloop.deploy.kubernetes.leader import LeaseElector
from modelloop.deploy.kubernetes.manifests import ServingOptions
from modelloop.deploy.kubernetes.target import KubernetesTarget
from modelloop.deploy.registry import MlflowRegistry
from modelloop.deploy.settings import ControllerSettings
from tests.models import register_reference_model

from .conftest import required

pytestmark = pytest.mark.k8s


def wait_for(predicate: object, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(2)
    raise AssertionError(f"timed out waiting for {what}")


def test_promotion_rollout_and_rollback_on_a_cluster(cluster: str) -> None:
    tracking = required("MODELLOOP_E2E_TRACKING_URI")
    image = required("MODELLOOP_E2E_IMAGE")
    namespace = os.environ.get("MODELLOOP_E2E_NAMESPACE", "default")
    pod_tracking = os.environ.get("MODELLOOP_E2E_POD_TRACKING_URI", tracking)
    model = f"e2e-{uuid.uuid4().hex[:6]}"
    v1 = register_reference_model(tracking, model, max_iter=5)
    v2 = register_reference_model(tracking, model, max_iter=6, seed=1)
    broken = register_reference_model(tracking, model, broken=True)
    client = mlflow.MlflowClient(tracking)
    [binding] = parse_bindings(
        {
            "bindings": [
                {
                    "name": model,
                    "model": model,
                    "target": "kubernetes",
                    "namespace": namespace,
                    "replicas": 1,
                    "resources": {
                        "requests": {"cpu": "100m", "memory": "256Mi"},
                        "limits": {"memory": "1Gi"},
                    },
                }
            ]
        }
    )
    settings = ControllerSettings(
        lease_namespace=namespace,
        identity="e2e",
        scoring_progress_deadline_seconds=120,
        scoring_min_ready_seconds=2,
    )
    api = DynamicKubeApi()
    target = KubernetesTarget(
        api,
        namespaces={binding.namespace},
        image=image,
        options=ServingOptions(
            tracking_uri=pod_tracking,
            progress_deadline_seconds=settings.scoring_progress_deadline_seconds,
            min_ready_seconds=settings.scoring_min_ready_seconds,
        ),
    )
    leader = LeaseElector(
        api, name=settings.lease_name, namespace=settings.lease_namespace, identity=settings.identity
    )
    ctl = Controller(
        [binding],
        MlflowRegistry(tracking),
        {"kubernetes": target},
        poll_interval=5,
        rollout_deadline=240,
        leader=leader,
    )
    ctl.start()
    try:
        for version in (v1.version, v2.version):
            client.set_registered_model_alias(model, "production", version)
            wait_for(
                lambda v=version: (
                    (s := target.get(model)) is not None and s.champion_version == v and s.ready
                ),
                400,
                f"version {version} rolled out",
            )
        client.set_registered_model_alias(model, "production", broken.version)
        wait_for(
            lambda: client.get_model_version(model, broken.version).tags.get(TAG_ROLLOUT) == "failed",
            600,
            "broken version rolled back",
        )
        state = target.get(model)
        assert state is not None and state.champion_version == v2.version
    finally:
        ctl.stop()
        target.delete(model)
