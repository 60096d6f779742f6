"""An in-memory deployment target for tests of the controller core (and the contract suite's reference).

Versions listed in `broken` never become ready (RolloutFailedError, the old state stays);
`unreachable=True` makes every call raise TemporaryError.
Records every call in `calls`.
"""

from __future__ import annotations

import threading

from .errors import RolloutFailedError, TemporaryError
from .target import DeploymentSpec, DeploymentState, DeploymentTarget


class FakeTarget(DeploymentTarget):
    def __init__(self, *, broken: set[tuple[str, str]] | None = None) -> None:
        self.broken: set[tuple[str, str]] = set(broken or ())  # (model, version)
        self.unreachable = False
        self.calls: list[tuple[str, str]] = []
        self._states: dict[str, DeploymentState] = {}
        self._lock = threading.Lock()

    def _check(self, verb: str, name: str) -> None:
        self.calls.append((verb, name))
        if self.unreachable:
            raise TemporaryError("fake target unreachable", delay=0.1)

    def _apply(self, spec: DeploymentSpec) -> DeploymentState:
        for version in (spec.champion_version, spec.challenger_version):
            if version is not None and (spec.model, version) in self.broken:
                raise RolloutFailedError(f"{spec.model}/{version} did not become ready")
        state = DeploymentState(
            name=spec.name,
            model=spec.model,
            champion_version=spec.champion_version,
            challenger_version=spec.challenger_version,
            mode=spec.mode,
        )
        self._states[spec.name] = state
        return state

    def create(self, spec: DeploymentSpec, *, deadline: float) -> DeploymentState:
        with self._lock:
            self._check("create", spec.name)
            return self._apply(spec)

    def update(self, spec: DeploymentSpec, *, deadline: float) -> DeploymentState:
        with self._lock:
            self._check("update", spec.name)
            if spec.name not in self._states:
                raise RolloutFailedError(f"binding {spec.name} is not deployed")
            return self._apply(spec)

    def delete(self, name: str) -> None:
        with self._lock:
            self._check("delete", name)
            self._states.pop(name, None)

    def get(self, name: str) -> DeploymentState | None:
        with self._lock:
            self._check("get", name)
            return self._states.get(name)

    def list(self) -> list[DeploymentState]:
        with self._lock:
            self._check("list", "*")
            return list(self._states.values())


__all__ = ["FakeTarget"]
