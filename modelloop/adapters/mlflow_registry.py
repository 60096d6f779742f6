"""`MlflowModelRegistry`: the model-registry port over an MLflow tracking server (or store).

Used by serving (resolution and loading of the versions it hosts), training's promotion gate (the production
version), deploy's registry (resolution, version tags) and whoever else reads the registry. One
`mlflow.MlflowClient` per instance, built from the URIs given: no process-wide MLflow state is read or set.
Safe to call from several threads (MLflow's client is).

The port's contract is in `modelloop.contract.model_registry`; the error classification in
`adapters.mlflow_errors`. Beyond the port: `newest_in_stage` (a deprecated stage, for callers that follow a
stage of their own choosing), `versions` and `aliases` (listing a model's versions and what names them, for
the demo's report), `set_alias` (moving an alias as a person does in the MLflow UI: the demo's promotion),
`set_description` (a version's markdown description: its story, `adapters.mlflow_version_story`),
`load_model` (a registered version's model object and a plain description of its signature, see
`adapters.mlflow_models`) and `client` (the MLflow client, shared with the adapters for what the port does not
cover: `mlflow_rollouts` for deployment runs, `mlflow_webhooks`, `mlflow_runs` for searching runs).
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from modelloop.contract.errors import ConfigError, NotFoundError, clip, public_uri
from modelloop.contract.model_registry import ModelRegistry, RunInfo, VersionInfo
from modelloop.contract.registry import ALIAS_FOR_ROLE, STAGE_FOR_ROLE

from . import mlflow_errors, mlflow_filters
from .mlflow_models import LoadedArtifact, load_registered_model

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion as MlflowModelVersion

T = TypeVar("T")

#: the deprecated stage honoured for each role alias ("production" -> "Production", ...)
STAGE_FOR_ALIAS: dict[str, str] = {alias: STAGE_FOR_ROLE[role] for role, alias in ALIAS_FOR_ROLE.items()}


class MlflowModelRegistry(ModelRegistry):
    """The registry port over MLflow at `tracking_uri` (its registry at `registry_uri`, default the same).

    ConfigError when MLflow does not support the URI."""

    def __init__(self, tracking_uri: str, registry_uri: str | None = None) -> None:
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        self.tracking_uri = tracking_uri
        self.registry_uri = registry_uri or tracking_uri
        self.where = f"MLflow at {public_uri(tracking_uri)}"
        try:
            self._client = MlflowClient(tracking_uri=tracking_uri, registry_uri=self.registry_uri)
        except MlflowException:
            raise ConfigError(
                f"tracking URI {clip(public_uri(tracking_uri), 120)} is not one MLflow supports"
            ) from None

    @property
    def client(self) -> MlflowClient:
        """The MLflow client, for writes the port does not cover; classify its errors with `mlflow_errors`."""
        return self._client

    @contextmanager
    def _translated(self, doing: str, *, lookup: bool = False) -> Iterator[None]:
        """MLflow and transport failures inside the block become the port's errors."""
        try:
            yield
        except Exception as exc:
            if mlflow_errors.kind_of(exc, lookup=lookup) is None:
                raise
            raise mlflow_errors.classify(exc, doing, where=self.where, lookup=lookup) from None

    def _missing(self, call: Callable[[], T], doing: str) -> T | None:
        """`call()`, or None when MLflow says the thing looked up does not exist."""
        try:
            with self._translated(doing, lookup=True):
                return call()
        except NotFoundError:
            return None

    # --- registered models -------------------------------------------------------------------------------
    def model_exists(self, model: str) -> bool:
        found = self._missing(lambda: self._client.get_registered_model(model), f"looking up {clip(model)}")
        return found is not None

    def model_tags(self, model: str) -> dict[str, str]:
        found = self._missing(lambda: self._client.get_registered_model(model), f"reading {clip(model)}")
        if found is None:
            raise self._not_registered(model)
        return dict(found.tags)

    def set_model_tags(self, model: str, tags: dict[str, str]) -> None:
        if not self.model_exists(model):
            raise self._not_registered(model)
        with self._translated(f"tagging {clip(model)}"):
            for key, value in tags.items():
                self._client.set_registered_model_tag(model, key, value)

    # --- versions ----------------------------------------------------------------------------------------
    def resolve(self, model: str, alias: str) -> str | None:
        doing = f"resolving {clip(model)}@{clip(alias)}"
        found = self._missing(lambda: self._client.get_model_version_by_alias(model, alias), doing)
        if found is not None:
            return str(found.version)
        stage = STAGE_FOR_ALIAS.get(alias)  # older registries: the deprecated stage of the same role
        return self.newest_in_stage(model, stage) if stage is not None else None

    def newest_in_stage(self, model: str, stage: str) -> str | None:
        """The newest version of `model` in a deprecated stage ("Production", "Staging"), or None."""

        def latest() -> list[str]:
            with warnings.catch_warnings():  # stages are deprecated; honouring them is the point here
                warnings.simplefilter("ignore", FutureWarning)
                return [str(v.version) for v in self._client.get_latest_versions(model, stages=[stage])]

        found = self._missing(latest, f"resolving {clip(model)} stage {clip(stage)}")
        return str(max(int(v) for v in found)) if found else None

    def version(self, model: str, version: str) -> VersionInfo:
        doing = f"reading {clip(model)}/{clip(version)}"
        mv = self._missing(lambda: self._client.get_model_version(model, version), doing)
        if mv is None:
            raise self._no_version(model, version)
        return self._version_info(model, mv)

    @staticmethod
    def _version_info(model: str, mv: MlflowModelVersion) -> VersionInfo:
        return VersionInfo(
            model=model,
            version=str(mv.version),
            run_id=mv.run_id or None,
            source=str(mv.source or ""),
            tags=dict(mv.tags),
            description=mv.description or "",
        )

    def set_version_tags(self, model: str, version: str, tags: dict[str, str]) -> None:
        self.version(model, version)  # NotFoundError naming the model or the version
        with self._translated(f"tagging {clip(model)}/{clip(version)}"):
            for key, value in tags.items():
                self._client.set_model_version_tag(model, version, key, value)

    # --- runs and artifacts ------------------------------------------------------------------------------
    def run(self, run_id: str) -> RunInfo:
        found = self._missing(lambda: self._client.get_run(run_id), f"reading run {clip(run_id)}")
        if found is None:
            raise NotFoundError(f"run {clip(run_id)} does not exist")
        return RunInfo(
            run_id=found.info.run_id,
            experiment_id=str(found.info.experiment_id),
            status=str(found.info.status),
            params=dict(found.data.params),
            metrics={k: float(v) for k, v in found.data.metrics.items()},
            tags=dict(found.data.tags),
        )

    def set_run_tags(self, run_id: str, tags: dict[str, str]) -> None:
        self.run(run_id)
        with self._translated(f"tagging run {clip(run_id)}"):
            for key, value in tags.items():
                self._client.set_tag(run_id, key, value)

    def read_artifact(self, run_id: str, path: str) -> bytes:
        self.run(run_id)
        folder = path.rstrip("/").rpartition("/")[0]
        doing = f"reading {clip(path)} of run {clip(run_id)}"
        listed = self._missing(lambda: self._client.list_artifacts(run_id, folder or None), doing) or []
        if not any(f.path == path.rstrip("/") and not f.is_dir for f in listed):
            raise NotFoundError(f"run {clip(run_id)} has no artifact {clip(path)}")
        with tempfile.TemporaryDirectory(prefix="modelloop-artifact-") as tmp, self._translated(doing):
            local = self._client.download_artifacts(run_id, path, tmp)
            return Path(local).read_bytes()

    # --- beyond the port: listing versions, moving an alias as a person does in the UI ---------------------
    def versions(self, model: str) -> list[VersionInfo]:
        """Every version of `model`, oldest first ([] when it is not registered)."""
        flt = mlflow_filters.equals("name", model)
        doing = f"listing the versions of {clip(model)}"
        found: list[MlflowModelVersion] = (
            self._missing(lambda: self._client.search_model_versions(flt), doing) or []
        )
        infos = [self._version_info(model, mv) for mv in found if mv.name == model]
        return sorted(infos, key=lambda v: int(v.version))

    def aliases(self, model: str, version: str) -> list[str]:
        """The aliases naming one version; NotFoundError when it does not exist."""
        doing = f"reading {clip(model)}/{clip(version)}"
        mv = self._missing(lambda: self._client.get_model_version(model, version), doing)
        if mv is None:
            raise self._no_version(model, version)
        return list(mv.aliases)

    def set_alias(self, model: str, alias: str, version: str) -> None:
        """Point `alias` of `model` at `version`, as a person does in the MLflow UI (not the port: modelloop
        itself moves aliases only through training's promotion); NotFoundError when the version does not
        exist."""
        self.version(model, version)
        with self._translated(f"setting {clip(model)}@{clip(alias)}"):
            self._client.set_registered_model_alias(model, alias, version)

    def set_description(self, model: str, version: str, description: str) -> bool:
        """Set the markdown description of one version unless it already reads so; True when it changed.
        NotFoundError when the version does not exist."""
        current = self.version(model, version).description
        if current == description:
            return False
        with self._translated(f"describing {clip(model)}/{clip(version)}"):
            self._client.update_model_version(model, version, description=description)
        return True

    # --- loading (not the port) --------------------------------------------------------------------------
    def load_model(self, model: str, version: str, *, sklearn_only: bool = False) -> LoadedArtifact:
        """The model object of a registered version (see `adapters.mlflow_models.load_registered_model`)."""
        return load_registered_model(
            self._client,
            model,
            version,
            registry_uri=self.registry_uri,
            where=self.where,
            sklearn_only=sklearn_only,
        )

    def _no_version(self, model: str, version: str) -> NotFoundError:
        """The error for a version MLflow did not find: naming the model when it is not registered at all."""
        if not self.model_exists(model):
            return self._not_registered(model)
        return NotFoundError(f"model {clip(model)} has no version {clip(version)}")

    def _not_registered(self, model: str) -> NotFoundError:
        return NotFoundError(f"model {clip(model)} is not registered in {self.where}")


__all__ = ["STAGE_FOR_ALIAS", "MlflowModelRegistry"]
