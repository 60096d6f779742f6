"""The model-registry port: what every part needs from a model registry, and one classification of its errors.

Implemented by `modelloop.adapters.mlflow_registry.MlflowModelRegistry` (an MLflow tracking server or store)
and `modelloop.contract.memory_registry.InMemoryModelRegistry` (tests, dry runs); one contract test suite
(`tests/contract/model_registry_contract.py`) runs over both. Serving's resolution, the promotion gate,
deploy's registry and monitoring's tracker all read and write the registry through it.

The contract:
- `resolve` returns the version an alias names now; for the two role aliases (`production`, `challenger`) it
  falls back to the newest version in the matching deprecated stage; None when neither names one, or when
  the model is not registered at all (`model_exists` tells those apart).
- Reading a thing that does not exist raises `NotFoundError` naming it (model, version, run or artifact).
- Every method raises exactly one of three errors on failure, never a transport or MLflow exception:
  `NotFoundError` (the thing does not exist), `UnavailableError` (the registry cannot be reached now; retrying
  may succeed), `RegistryRefusedError` (the registry answered and refused: permission, invalid request).
- Messages name what was asked for (model names cut to a bounded length) and never quote a credential.
- Writes of tags are idempotent: setting the same tags again changes nothing.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from pydantic import ValidationError

from .errors import InvalidInputError, ModelloopError, NotFoundError, clip
from .profile import ReferenceProfile
from .registry import ALIAS_FOR_ROLE, REFERENCE_PROFILE_PATH, Role


class RegistryRefusedError(ModelloopError):
    """The registry answered and refused the request (permission denied, invalid request); retrying the
    same request will not help."""


@dataclass(frozen=True)
class VersionInfo:
    """One registered model version."""

    model: str
    version: str
    run_id: str | None  # the run that logged it (None for a version registered from a bare artifact)
    source: str  # where its artifacts are (`models:/m-...`, `runs:/...`, a URI)
    tags: dict[str, str] = field(default_factory=dict)
    description: str = ""


@dataclass(frozen=True)
class RunInfo:
    """One tracking run: what a reader of params, metrics and tags needs."""

    run_id: str
    experiment_id: str
    status: str  # "RUNNING" | "FINISHED" | "FAILED" | "KILLED" | "SCHEDULED"
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)  # latest value of each metric
    tags: dict[str, str] = field(default_factory=dict)


class ModelRegistry(ABC):
    """The registry port (see the module docstring for the contract every implementation keeps)."""

    #: what messages call this registry, e.g. "MLflow at http://mlflow:5000" (never with credentials)
    where: str = "the model registry"

    # --- registered models -------------------------------------------------------------------------------
    @abstractmethod
    def model_exists(self, model: str) -> bool:
        """True when `model` is registered."""

    @abstractmethod
    def model_tags(self, model: str) -> dict[str, str]:
        """Tags of a registered model; NotFoundError when it is not registered."""

    @abstractmethod
    def set_model_tags(self, model: str, tags: dict[str, str]) -> None:
        """Set tags on a registered model; NotFoundError when it is not registered."""

    # --- versions ----------------------------------------------------------------------------------------
    @abstractmethod
    def resolve(self, model: str, alias: str) -> str | None:
        """The version `alias` names now (role aliases fall back to their deprecated stage), or None."""

    @abstractmethod
    def version(self, model: str, version: str) -> VersionInfo:
        """One version; NotFoundError when the model or the version does not exist."""

    @abstractmethod
    def set_version_tags(self, model: str, version: str, tags: dict[str, str]) -> None:
        """Set tags on one version; NotFoundError when it does not exist."""

    # --- runs and artifacts ------------------------------------------------------------------------------
    @abstractmethod
    def run(self, run_id: str) -> RunInfo:
        """One run; NotFoundError when it does not exist."""

    @abstractmethod
    def set_run_tags(self, run_id: str, tags: dict[str, str]) -> None:
        """Set tags on one run; NotFoundError when it does not exist."""

    @abstractmethod
    def read_artifact(self, run_id: str, path: str) -> bytes:
        """The bytes of one artifact file of a run; NotFoundError when the run or the file does not exist."""

    # --- derived reads, the same for every implementation ------------------------------------------------
    def resolve_role(self, model: str, role: Role) -> str | None:
        """The version holding `role`'s alias (or its deprecated stage), or None."""
        return self.resolve(model, ALIAS_FOR_ROLE[role])

    def reference_profile(self, model: str, version: str) -> ReferenceProfile:
        """The reference profile logged with the version's training run.

        NotFoundError when the version, its run or the profile is missing; InvalidInputError when the
        artifact does not match the schema."""
        info = self.version(model, version)
        if info.run_id is None:
            raise NotFoundError(f"model {clip(model)} version {clip(version)} has no training run")
        data = self.read_artifact(info.run_id, REFERENCE_PROFILE_PATH)
        try:
            return ReferenceProfile.model_validate_json(data)
        except ValidationError:
            raise InvalidInputError(
                f"reference profile of model {clip(model)} version {clip(version)} does not match the schema"
            ) from None


__all__ = ["ModelRegistry", "RegistryRefusedError", "RunInfo", "VersionInfo"]
