"""The model-registry contract over the in-memory registry."""

from __future__ import annotations

import secrets

import pytest

from modelloop.contract.memory_registry import InMemoryModelRegistry
from modelloop.contract.model_registry import RunInfo

from .model_registry_contract import Arrange, ModelRegistryContract


class MemoryArrange(Arrange):
    def __init__(self) -> None:
        self.memory = InMemoryModelRegistry()
        self.registry = self.memory

    def register(self, model: str, *, run_id: str | None = None) -> str:
        return self.memory.register(model, run_id=run_id)

    def set_alias(self, model: str, alias: str, version: str) -> None:
        self.memory.set_alias(model, alias, version)

    def set_stage(self, model: str, version: str, stage: str) -> None:
        self.memory.set_stage(model, version, stage)

    def add_run(self, *, params: dict[str, str], metrics: dict[str, float], tags: dict[str, str]) -> str:
        run_id = secrets.token_hex(16)
        self.memory.add_run(RunInfo(run_id, "0", "FINISHED", dict(params), dict(metrics), dict(tags)))
        return run_id

    def put_artifact(self, run_id: str, path: str, data: bytes) -> None:
        self.memory.put_artifact(run_id, path, data)


class TestInMemoryModelRegistry(ModelRegistryContract):
    @pytest.fixture
    def arrange(self) -> Arrange:
        return MemoryArrange()
