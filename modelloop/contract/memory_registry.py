"""An in-memory model registry: the `ModelRegistry` port without a server, for tests and dry runs.

Keeps the port's whole contract (the same contract suite runs over it and over MLflow), including the
deprecated-stage fallback of the role aliases. Safe to call from several threads. The `register`, `set_alias`,
`set_stage`, `add_run` and `put_artifact` methods stand in for what training (or a person in the MLflow UI)
does to a real registry; they are not part of the port.
"""

from __future__ import annotations

import threading
from dataclasses import replace

from .errors import NotFoundError, clip
from .model_registry import ModelRegistry, RunInfo, VersionInfo
from .registry import ALIAS_FOR_ROLE, STAGE_FOR_ROLE


class InMemoryModelRegistry(ModelRegistry):
    """Models, versions, aliases, stages, runs and artifacts in dictionaries."""

    where = "the in-memory registry"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._models: dict[str, dict[str, str]] = {}  # model -> tags
        self._versions: dict[tuple[str, str], VersionInfo] = {}
        self._aliases: dict[tuple[str, str], str] = {}  # (model, alias) -> version
        self._stages: dict[tuple[str, str], str] = {}  # (model, version) -> stage
        self._runs: dict[str, RunInfo] = {}
        self._artifacts: dict[tuple[str, str], bytes] = {}

    # --- what training or a person does (not the port) ---------------------------------------------------
    def add_run(self, run: RunInfo) -> None:
        with self._lock:
            self._runs[run.run_id] = run

    def put_artifact(self, run_id: str, path: str, data: bytes) -> None:
        with self._lock:
            self._artifacts[(run_id, path)] = data

    def register(self, model: str, *, run_id: str | None = None, tags: dict[str, str] | None = None) -> str:
        """A new version of `model` (registering the model on first use); returns its number."""
        with self._lock:
            self._models.setdefault(model, {})
            version = str(1 + sum(1 for m, _ in self._versions if m == model))
            source = f"runs:/{run_id}/model" if run_id else f"memory:/{model}/{version}"
            self._versions[(model, version)] = VersionInfo(model, version, run_id, source, dict(tags or {}))
            return version

    def set_alias(self, model: str, alias: str, version: str | None) -> None:
        """Point `alias` at `version` (None deletes the alias)."""
        with self._lock:
            if version is None:
                self._aliases.pop((model, alias), None)
            else:
                self._version(model, version)
                self._aliases[(model, alias)] = version

    def set_stage(self, model: str, version: str, stage: str) -> None:
        with self._lock:
            self._version(model, version)
            self._stages[(model, version)] = stage

    # --- the port ----------------------------------------------------------------------------------------
    def model_exists(self, model: str) -> bool:
        with self._lock:
            return model in self._models

    def model_tags(self, model: str) -> dict[str, str]:
        with self._lock:
            return dict(self._model(model))

    def set_model_tags(self, model: str, tags: dict[str, str]) -> None:
        with self._lock:
            self._model(model).update(tags)

    def resolve(self, model: str, alias: str) -> str | None:
        with self._lock:
            found = self._aliases.get((model, alias))
            if found is not None:
                return found
            stage = {a: STAGE_FOR_ROLE[r] for r, a in ALIAS_FOR_ROLE.items()}.get(alias)
            staged = [int(v) for (m, v), s in self._stages.items() if m == model and s == stage]
            return str(max(staged)) if staged else None

    def version(self, model: str, version: str) -> VersionInfo:
        with self._lock:
            info = self._version(model, version)
            return replace(info, tags=dict(info.tags))

    def set_version_tags(self, model: str, version: str, tags: dict[str, str]) -> None:
        with self._lock:
            info = self._version(model, version)
            self._versions[(model, version)] = replace(info, tags={**info.tags, **tags})

    def run(self, run_id: str) -> RunInfo:
        with self._lock:
            run = self._run(run_id)
            return replace(run, params=dict(run.params), metrics=dict(run.metrics), tags=dict(run.tags))

    def set_run_tags(self, run_id: str, tags: dict[str, str]) -> None:
        with self._lock:
            run = self._run(run_id)
            self._runs[run_id] = replace(run, tags={**run.tags, **tags})

    def read_artifact(self, run_id: str, path: str) -> bytes:
        with self._lock:
            self._run(run_id)
            data = self._artifacts.get((run_id, path))
            if data is None:
                raise NotFoundError(f"run {clip(run_id)} has no artifact {clip(path)}")
            return data

    # --- lookups (the lock is held) ----------------------------------------------------------------------
    def _model(self, model: str) -> dict[str, str]:
        tags = self._models.get(model)
        if tags is None:
            raise NotFoundError(f"model {clip(model)} is not registered in {self.where}")
        return tags

    def _version(self, model: str, version: str) -> VersionInfo:
        self._model(model)
        info = self._versions.get((model, version))
        if info is None:
            raise NotFoundError(f"model {clip(model)} has no version {clip(version)}")
        return info

    def _run(self, run_id: str) -> RunInfo:
        run = self._runs.get(run_id)
        if run is None:
            raise NotFoundError(f"run {clip(run_id)} does not exist")
        return run


__all__ = ["InMemoryModelRegistry"]
