"""The deployment-target port: where a binding's scoring servers run. Shaped like MLflow's deployment verbs
(`mlflow/deployments/base.py`: create, update, delete, get, list).

Called by `deploy.reconcile`; implemented by `deploy.local.LocalTarget` (subprocesses on this machine),
`deploy.kubernetes.target.KubernetesTarget` (a Deployment per binding) and `deploy.fake.FakeTarget` (tests).

Contract, checked by one test suite over every implementation (tests/*/deploy/target_contract.py):
- `create(spec, deadline=)` starts serving `spec` and returns once the champion (and challenger, if any)
  answer; `update(spec, deadline=)` moves an existing deployment to `spec` without failing a call.
- If the new version is not ready by the deadline, both raise `RolloutFailedError` and leave the deployment
  serving what it served before (for `create`: nothing, and `get` returns None).
- `get(name)` returns the deployed state or None; `list()` every deployment this target owns;
  `delete(name)` stops it (deleting a missing one is not an error).
- Unreachable infrastructure raises `TemporaryError`. Calls for different bindings may run concurrently;
  calls for one binding are serialised by the caller.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Literal

from .bindings import Binding


@dataclass(frozen=True)
class DeploymentSpec:
    """What one binding should serve: the desired state the reconciler computes from the registry."""

    binding: Binding
    champion_version: str
    challenger_version: str | None = None

    @property
    def name(self) -> str:
        return self.binding.name

    @property
    def model(self) -> str:
        return self.binding.model

    @property
    def mode(self) -> Literal["shadow", "canary"] | None:
        if self.challenger_version is None or self.binding.challenger is None:
            return None
        return self.binding.challenger.mode

    @property
    def canary_share(self) -> float | None:
        if self.mode != "canary" or self.binding.challenger is None:
            return None
        return self.binding.challenger.share


@dataclass(frozen=True)
class DeploymentState:
    """What a target serves for one binding now."""

    name: str
    model: str
    champion_version: str
    challenger_version: str | None = None
    mode: str | None = None
    ready: bool = True

    def matches(self, spec: DeploymentSpec) -> bool:
        """True when this state already serves `spec` (nothing to do)."""
        return (
            self.ready
            and self.model == spec.model
            and self.champion_version == spec.champion_version
            and self.challenger_version == spec.challenger_version
            and (self.challenger_version is None or self.mode == spec.mode)
        )


class DeploymentTarget(ABC):
    """Where bindings are served; see the module docstring for the contract."""

    @abstractmethod
    def create(self, spec: DeploymentSpec, *, deadline: float) -> DeploymentState:
        """Start serving `spec`; ready within `deadline` seconds or `RolloutFailedError`."""

    @abstractmethod
    def update(self, spec: DeploymentSpec, *, deadline: float) -> DeploymentState:
        """Move a deployment to `spec` without failed calls; `RolloutFailedError` keeps the old one."""

    @abstractmethod
    def delete(self, name: str) -> None:
        """Stop serving a binding."""

    @abstractmethod
    def get(self, name: str) -> DeploymentState | None:
        """The deployed state of a binding, or None."""

    @abstractmethod
    def list(self) -> list[DeploymentState]:
        """Every deployment this target owns."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources (processes, connections). Default: nothing."""


__all__ = ["DeploymentSpec", "DeploymentState", "DeploymentTarget"]
