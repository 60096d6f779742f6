"""Wiring of the deployment controller: the registry, the targets, the controller and its webhook receiver,
built in one place for the two processes that run a controller, `modelloop controller` (cli/controller.py)
and the local platform (`modelloop up`, cli/platform.py).

The caller says which targets to build: `LocalServing` for the `local` target (subprocess scoring servers),
`KubernetesServing` for the `kubernetes` target and its Lease leader elector (the target lists only the
namespaces where the bindings live: the chart's Role is namespaced, not cluster-wide). `WiredController`
holds what was built; `close()` closes the targets (stop the controller first).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from modelloop.deploy.bindings import Binding
    from modelloop.deploy.controller import Controller, LeaderElector
    from modelloop.deploy.kubernetes.manifests import ServingOptions
    from modelloop.deploy.local import LocalTarget
    from modelloop.deploy.target import DeploymentTarget


@dataclass(frozen=True)
class LocalServing:
    """The `local` target: scoring servers as subprocesses, their files under `work_dir`."""

    work_dir: Path
    prediction_log_url: str | None
    token_file: Path | None = None
    shared: bool = False


@dataclass(frozen=True)
class KubernetesServing:
    """The `kubernetes` target (scoring pods from `image`) and the Lease that elects the leader."""

    image: str
    options: ServingOptions
    lease_name: str
    lease_namespace: str
    identity: str


@dataclass(frozen=True)
class Reconciling:
    """How the controller reconciles and where its webhook receiver listens (no receiver without a secret)."""

    poll_interval: float
    rollout_deadline: float
    webhook_secret: str | None
    webhook_host: str = "127.0.0.1"
    webhook_port: int = 0


@dataclass
class WiredController:
    """A controller and the targets built for it (by target name)."""

    controller: Controller
    targets: dict[str, DeploymentTarget] = field(default_factory=dict)
    local: LocalTarget | None = None

    def close(self) -> None:
        """Close every target (their scoring servers stop); the controller must be stopped already."""
        for target in self.targets.values():
            target.close()


def _local_target(tracking_uri: str, local: LocalServing) -> LocalTarget:
    from modelloop.deploy.local import LocalTarget

    return LocalTarget(
        tracking_uri=tracking_uri,
        work_dir=local.work_dir,
        prediction_log_url=local.prediction_log_url,
        token_file=local.token_file,
        shared=local.shared,
    )


def _kubernetes_target(
    bindings: Sequence[Binding], kube: KubernetesServing
) -> tuple[DeploymentTarget, LeaderElector]:
    from modelloop.deploy.kubernetes.api import DynamicKubeApi
    from modelloop.deploy.kubernetes.leader import LeaseElector
    from modelloop.deploy.kubernetes.target import KubernetesTarget

    api = DynamicKubeApi()
    namespaces = {b.namespace for b in bindings if b.target == "kubernetes"}
    target = KubernetesTarget(api, namespaces=namespaces, image=kube.image, options=kube.options)
    leader = LeaseElector(api, name=kube.lease_name, namespace=kube.lease_namespace, identity=kube.identity)
    return target, leader


def wire_controller(
    bindings: Sequence[Binding],
    *,
    tracking_uri: str,
    reconciling: Reconciling,
    local: LocalServing | None = None,
    kubernetes: KubernetesServing | None = None,
    live: bool = False,
) -> WiredController:
    """The registry at `tracking_uri`, the targets asked for, and a controller over them (not started);
    `live`: one whose bindings can change while it runs (`cli.live_bindings.LiveController`)."""
    from modelloop.deploy.controller import Controller
    from modelloop.deploy.registry import MlflowRegistry

    kind = Controller
    if live:
        from modelloop.cli.live_bindings import LiveController

        kind = LiveController

    targets: dict[str, DeploymentTarget] = {}
    local_target = leader = None
    try:
        if local is not None:
            targets["local"] = local_target = _local_target(tracking_uri, local)
        if kubernetes is not None:
            targets["kubernetes"], leader = _kubernetes_target(bindings, kubernetes)
        controller = kind(
            bindings,
            MlflowRegistry(tracking_uri),
            targets,
            poll_interval=reconciling.poll_interval,
            rollout_deadline=reconciling.rollout_deadline,
            webhook_secret=reconciling.webhook_secret,
            webhook_host=reconciling.webhook_host,
            webhook_port=reconciling.webhook_port,
            leader=leader,
        )
    except BaseException:
        for target in targets.values():
            target.close()
        raise
    return WiredController(controller, targets, local_target)


def needs_target(bindings: Sequence[Binding], name: str) -> bool:
    """Whether some binding is served by target `name` (`local`, `kubernetes`)."""
    return any(b.target == name for b in bindings)


__all__ = [
    "KubernetesServing",
    "LocalServing",
    "Reconciling",
    "WiredController",
    "needs_target",
    "wire_controller",
]
