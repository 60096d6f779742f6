"""The `kubernetes` deployment target: applies a binding's objects (see `manifests`) with server-side apply,
waits for the Deployment's rollout, and rolls back to the previous version when it fails.

Wired by `modelloop controller` for bindings with `target: kubernetes`. A rollout has failed when the
Deployment reports `Progressing=False` with reason `ProgressDeadlineExceeded`, or when it is not complete by
the reconciler's deadline; the target then re-applies the objects of the previous version (what
`kubectl rollout undo` would do) and raises `RolloutFailedError`. A failed create deletes what it made.

The target manages a fixed set of namespaces (those of its bindings) and only ever lists there: the
controller's Role grants it rights in those namespaces, not cluster-wide. A binding in any other namespace is
refused with `PermanentError` before anything is applied.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection
from typing import Any

from ..errors import PermanentError, RolloutFailedError
from ..target import DeploymentSpec, DeploymentState, DeploymentTarget
from .api import KubeApi
from .manifests import (
    BINDING_LABEL,
    CHALLENGER_ANNOTATION,
    CONTROLLER_LABEL,
    FIELD_MANAGER,
    MODEL_ANNOTATION,
    VERSION_ANNOTATION,
    Manifest,
    ServingOptions,
    object_name,
    render_binding,
)

log = logging.getLogger(__name__)

_KINDS = [
    ("policy/v1", "PodDisruptionBudget"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("v1", "Service"),
    ("apps/v1", "Deployment"),
]


def rollout_status(dep: Manifest) -> tuple[bool, str | None]:
    """(complete, failure reason) of a Deployment read from the API."""
    meta, spec, status = dep.get("metadata", {}), dep.get("spec", {}), dep.get("status") or {}
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
            return False, f"ProgressDeadlineExceeded: {cond.get('message', '')}".strip()
    desired = int(spec.get("replicas") or 1)
    observed = int(status.get("observedGeneration") or 0)
    updated = int(status.get("updatedReplicas") or 0)
    replicas = int(status.get("replicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    complete = (
        observed >= int(meta.get("generation") or 0)
        and updated >= desired
        and replicas == updated
        and available >= updated
    )
    return complete, None


class KubernetesTarget(DeploymentTarget):
    """Deployments in a cluster through a `KubeApi` (see the module docstring)."""

    def __init__(
        self,
        api: KubeApi,
        *,
        namespaces: Collection[str],
        image: str,
        options: ServingOptions | None = None,
        poll: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not namespaces or not all(namespaces):
            raise ValueError("KubernetesTarget needs the (non-empty) namespaces it manages")
        self.api = api
        self.namespaces = tuple(sorted(set(namespaces)))
        self.image = image
        self.options = options or ServingOptions()
        self._poll = poll
        self._clock = clock
        self._sleep = sleep

    def _render(self, spec: DeploymentSpec, version: str, challenger: str | None) -> list[Manifest]:
        if spec.binding.namespace not in self.namespaces:
            raise PermanentError(
                f"binding {spec.name}: namespace {spec.binding.namespace} is not one this target manages "
                f"({', '.join(self.namespaces)})"
            )
        return render_binding(
            spec.binding,
            image=self.image,
            version=version,
            challenger_version=challenger,
            options=self.options,
        )

    def _apply_all(self, objects: list[Manifest]) -> None:
        for obj in objects:
            self.api.apply(obj)

    def _wait(self, spec: DeploymentSpec, deadline: float) -> str | None:
        """None when the rollout completed, else why it failed."""
        ns, name = spec.binding.namespace, object_name(spec.binding)
        end = self._clock() + deadline
        while True:
            dep = self.api.get("apps/v1", "Deployment", ns, name)
            if dep is not None:
                complete, failure = rollout_status(dep)
                if failure:
                    return failure
                if complete:
                    return None
            if self._clock() >= end:
                return f"rollout not complete within {deadline:.0f}s"
            self._sleep(self._poll)

    def create(self, spec: DeploymentSpec, *, deadline: float) -> DeploymentState:
        self._apply_all(self._render(spec, spec.champion_version, spec.challenger_version))
        failure = self._wait(spec, deadline)
        if failure:
            self._delete_objects(spec.binding.namespace, object_name(spec.binding))
            raise RolloutFailedError(f"{spec.model}/{spec.champion_version}: {failure}")
        return self._state_or_fail(spec.name)

    def update(self, spec: DeploymentSpec, *, deadline: float) -> DeploymentState:
        previous = self.get(spec.name)
        self._apply_all(self._render(spec, spec.champion_version, spec.challenger_version))
        failure = self._wait(spec, deadline)
        if failure:
            if previous is not None:
                log.error(
                    "binding %s: rolling back to %s/%s (%s)",
                    spec.name,
                    spec.model,
                    previous.champion_version,
                    failure,
                )
                self._apply_all(self._render(spec, previous.champion_version, previous.challenger_version))
            raise RolloutFailedError(f"{spec.model}/{spec.champion_version}: {failure}; rolled back")
        return self._state_or_fail(spec.name)

    def _state_or_fail(self, name: str) -> DeploymentState:
        state = self.get(name)
        if state is None:
            raise RolloutFailedError(f"binding {name}: Deployment vanished during the rollout")
        return state

    def _list(self, label_selector: str) -> list[Manifest]:
        """Deployments matching the selector in every managed namespace, one namespaced list each."""
        return [
            dep
            for namespace in self.namespaces
            for dep in self.api.list("apps/v1", "Deployment", namespace, label_selector=label_selector)
        ]

    def _owned(self) -> str:
        """Label selector of every Deployment this target made."""
        selector = f"app.kubernetes.io/managed-by={FIELD_MANAGER}"
        if self.options.owner:
            selector += f",{CONTROLLER_LABEL}={self.options.owner}"
        return selector

    def _find(self, name: str) -> Manifest | None:
        found = self._list(f"{BINDING_LABEL}={name},{self._owned()}")
        return found[0] if found else None

    @staticmethod
    def _state(dep: Manifest) -> DeploymentState | None:
        annotations: dict[str, Any] = (
            dep.get("spec", {}).get("template", {}).get("metadata", {}).get("annotations") or {}
        )
        labels = dep.get("metadata", {}).get("labels") or {}
        if VERSION_ANNOTATION not in annotations:
            return None
        complete, _ = rollout_status(dep)
        return DeploymentState(
            name=str(labels.get(BINDING_LABEL, "")),
            model=str(annotations.get(MODEL_ANNOTATION, "")),
            champion_version=str(annotations[VERSION_ANNOTATION]),
            challenger_version=annotations.get(CHALLENGER_ANNOTATION),
            mode=_challenger_mode(dep),
            ready=complete,
        )

    def get(self, name: str) -> DeploymentState | None:
        dep = self._find(name)
        return None if dep is None else self._state(dep)

    def list(self) -> list[DeploymentState]:
        deps = self._list(self._owned())
        return [s for s in (self._state(d) for d in deps) if s is not None]

    def delete(self, name: str) -> None:
        dep = self._find(name)
        if dep is not None:
            self._delete_objects(dep["metadata"]["namespace"], dep["metadata"]["name"])

    def _delete_objects(self, namespace: str, name: str) -> None:
        for api_version, kind in _KINDS:
            self.api.delete(api_version, kind, namespace, name)


def _challenger_mode(dep: Manifest) -> str | None:
    containers = dep.get("spec", {}).get("template", {}).get("spec", {}).get("containers") or [{}]
    args = list(containers[0].get("args") or [])
    if "--challenger-mode" in args:
        i = args.index("--challenger-mode")
        return str(args[i + 1]) if i + 1 < len(args) else None
    return None


__all__ = ["KubernetesTarget", "rollout_status"]
