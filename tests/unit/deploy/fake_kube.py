"""A fake at the Kubernetes client boundary (`deploy.kubernetes.api.KubeApi`): records every call, keeps
objects in memory, and plays back Deployment statuses scripted per model version.

Each call is recorded as a `Call` with its namespace, so the chart's RBAC can be checked against what the
code does (tests/integration/helm/test_chart_controller_agreement.py). Like the API server, a call without a
namespace (a `list` with none, an object without `metadata.namespace`) is a cluster-wide call: it is recorded
as such (`namespace=None`) and, for `list`, answered from every namespace.
"""

from __future__ import annotations

import copy
from typing import Any, NamedTuple

from modelloop.deploy.errors import TemporaryError
from modelloop.deploy.kubernetes.api import ConflictError
from modelloop.deploy.kubernetes.manifests import VERSION_ANNOTATION

Manifest = dict[str, Any]


def complete(generation: int, replicas: int = 2) -> dict[str, Any]:
    return {
        "observedGeneration": generation,
        "replicas": replicas,
        "updatedReplicas": replicas,
        "availableReplicas": replicas,
    }


def progressing(generation: int) -> dict[str, Any]:
    return {"observedGeneration": generation, "replicas": 3, "updatedReplicas": 1, "availableReplicas": 2}


def deadline_exceeded(generation: int) -> dict[str, Any]:
    return {
        **progressing(generation),
        "conditions": [
            {
                "type": "Progressing",
                "status": "False",
                "reason": "ProgressDeadlineExceeded",
                "message": "ReplicaSet has timed out progressing.",
            }
        ],
    }


class Call(NamedTuple):
    """One `KubeApi` call as the API server would authorize it."""

    verb: str  # the KubeApi method: apply, get, list, delete, create, replace
    kind: str
    namespace: str | None  # None: cluster-wide
    name: str | None  # None for list (a collection, not one object)
    label_selector: str | None = None

    @property
    def namespaced(self) -> bool:
        return bool(self.namespace)


class FakeKubeApi:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], Manifest] = {}
        self.calls: list[Call] = []
        self.scripts: dict[
            str, list[str]
        ] = {}  # version -> statuses to play: "progressing" | "complete" | "failed"
        self._queues: dict[tuple[str, str], list[str]] = {}
        self._version = 0
        self.down = False

    @staticmethod
    def _where(obj: Manifest) -> tuple[str, str | None, str]:
        return obj["kind"], obj["metadata"].get("namespace"), obj["metadata"]["name"]

    def _key(self, obj: Manifest) -> tuple[str, str, str]:
        return obj["kind"], obj["metadata"].get("namespace", ""), obj["metadata"]["name"]

    def _check(
        self, verb: str, kind: str, namespace: str | None, name: str | None, label_selector: str | None = None
    ) -> None:
        self.calls.append(Call(verb, kind, namespace or None, name, label_selector))
        if self.down:
            raise TemporaryError("fake API down", delay=0.01)

    def apply(self, obj: Manifest) -> Manifest:
        self._check("apply", *self._where(obj))
        key = self._key(obj)
        old = self.objects.get(key)
        new = copy.deepcopy(obj)
        generation = int(old["metadata"]["generation"]) if old else 0
        if old is None or old.get("spec") != obj.get("spec"):
            generation += 1
        new["metadata"]["generation"] = generation
        if obj["kind"] == "Deployment":
            version = obj["spec"]["template"]["metadata"]["annotations"][VERSION_ANNOTATION]
            if old is None or old.get("spec") != obj.get("spec"):
                self._queues[key[1:]] = list(self.scripts.get(version, ["complete"]))
            new["status"] = old.get("status", {}) if old else {}
        self.objects[key] = new
        return copy.deepcopy(new)

    def _play(self, dep: Manifest) -> None:
        queue = self._queues.get((dep["metadata"]["namespace"], dep["metadata"]["name"]), [])
        step = queue.pop(0) if len(queue) > 1 else (queue[0] if queue else "complete")
        gen = int(dep["metadata"]["generation"])
        dep["status"] = {"complete": complete, "progressing": progressing, "failed": deadline_exceeded}[step](
            gen
        )

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> Manifest | None:
        self._check("get", kind, namespace, name)
        obj = self.objects.get((kind, namespace, name))
        if obj is None:
            return None
        if kind == "Deployment":
            self._play(obj)
        return copy.deepcopy(obj)

    def list(
        self, api_version: str, kind: str, namespace: str | None = None, *, label_selector: str
    ) -> list[Manifest]:
        self._check("list", kind, namespace, None, label_selector)
        wanted = dict(part.split("=", 1) for part in label_selector.split(","))
        out = []
        for (k, ns, _), obj in self.objects.items():
            labels = obj["metadata"].get("labels") or {}
            in_scope = not namespace or ns == namespace
            if k == kind and in_scope and all(labels.get(a) == b for a, b in wanted.items()):
                if kind == "Deployment":
                    self._play(obj)
                out.append(copy.deepcopy(obj))
        return out

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        self._check("delete", kind, namespace, name)
        self.objects.pop((kind, namespace, name), None)

    def create(self, obj: Manifest) -> Manifest:
        self._check("create", *self._where(obj))
        key = self._key(obj)
        if key in self.objects:
            raise ConflictError("exists")
        self._version += 1
        new = copy.deepcopy(obj)
        new["metadata"]["resourceVersion"] = str(self._version)
        self.objects[key] = new
        return copy.deepcopy(new)

    def replace(self, obj: Manifest) -> Manifest:
        self._check("replace", *self._where(obj))
        key = self._key(obj)
        old = self.objects.get(key)
        if old is None or old["metadata"].get("resourceVersion") != obj["metadata"].get("resourceVersion"):
            raise ConflictError("changed")
        return self.create_or_bump(key, obj)

    def create_or_bump(self, key: tuple[str, str, str], obj: Manifest) -> Manifest:
        self._version += 1
        new = copy.deepcopy(obj)
        new["metadata"]["resourceVersion"] = str(self._version)
        self.objects[key] = new
        return copy.deepcopy(new)
