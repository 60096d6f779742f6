"""The contract suite of the model-registry port (`modelloop.contract.model_registry`), run over every
implementation: `test_memory_registry.py` (in memory) and `test_mlflow_registry.py` (a real `mlflow server`).

A test class inherits `ModelRegistryContract` and provides the `arrange` fixture: an `Arrange` that seeds
data the way training (or a person in the MLflow UI) would, outside the port, and hands out the registry under
test.
"""

from __future__ import annotations

import secrets
from abc import ABC, abstractmethod

import numpy as np
import pandas as pd
import pytest

from modelloop.contract.errors import InvalidInputError, NotFoundError
from modelloop.contract.model_registry import ModelRegistry
from modelloop.contract.profile import build_profile
from modelloop.contract.registry import REFERENCE_PROFILE_PATH, Role


class Arrange(ABC):
    """Seeds one implementation's store; `registry` is the port under test."""

    registry: ModelRegistry

    @abstractmethod
    def register(self, model: str, *, run_id: str | None = None) -> str:
        """A new version of `model` (registering the model on first use); its number."""

    @abstractmethod
    def set_alias(self, model: str, alias: str, version: str) -> None: ...

    @abstractmethod
    def set_stage(self, model: str, version: str, stage: str) -> None: ...

    @abstractmethod
    def add_run(self, *, params: dict[str, str], metrics: dict[str, float], tags: dict[str, str]) -> str:
        """A finished run with these params, metrics and tags; its id."""

    @abstractmethod
    def put_artifact(self, run_id: str, path: str, data: bytes) -> None: ...


def unique(prefix: str = "contract") -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def missing_run_id() -> str:
    return secrets.token_hex(16)


class ModelRegistryContract:
    """What every `ModelRegistry` keeps (the port's docstring states it)."""

    @pytest.fixture
    def arrange(self) -> Arrange:
        raise NotImplementedError

    # --- resolution ----------------------------------------------------------------------------------------
    def test_an_alias_resolves_to_its_version(self, arrange: Arrange) -> None:
        model = unique()
        first, second = arrange.register(model), arrange.register(model)
        arrange.set_alias(model, "production", first)
        arrange.set_alias(model, "blue", second)
        assert arrange.registry.resolve(model, "production") == first
        assert arrange.registry.resolve(model, "blue") == second
        assert arrange.registry.resolve_role(model, Role.CHAMPION) == first

    def test_role_aliases_fall_back_to_the_newest_version_in_their_stage(self, arrange: Arrange) -> None:
        model = unique()
        versions = [arrange.register(model) for _ in range(3)]
        arrange.set_stage(model, versions[0], "Production")
        arrange.set_stage(model, versions[1], "Production")
        arrange.set_stage(model, versions[2], "Staging")
        registry = arrange.registry
        assert registry.resolve(model, "production") == versions[1]
        assert registry.resolve_role(model, Role.CHALLENGER) == versions[2]
        arrange.set_alias(model, "production", versions[0])  # the alias wins over the stage
        assert registry.resolve(model, "production") == versions[0]

    def test_other_aliases_have_no_stage_fallback(self, arrange: Arrange) -> None:
        model = unique()
        version = arrange.register(model)
        arrange.set_stage(model, version, "Production")
        assert arrange.registry.resolve(model, "blue") is None

    def test_unknown_alias_or_model_resolves_to_none(self, arrange: Arrange) -> None:
        model = unique()
        arrange.register(model)
        assert arrange.registry.resolve(model, "no-such-alias") is None
        assert arrange.registry.resolve(model, "production") is None
        assert arrange.registry.resolve(unique("ghost"), "production") is None
        assert arrange.registry.resolve(unique("ghost"), "blue") is None

    def test_model_exists(self, arrange: Arrange) -> None:
        model = unique()
        arrange.register(model)
        assert arrange.registry.model_exists(model)
        assert not arrange.registry.model_exists(unique("ghost"))

    # --- tags ----------------------------------------------------------------------------------------------
    def test_model_tags_are_written_idempotently(self, arrange: Arrange) -> None:
        model = unique()
        arrange.register(model)
        registry = arrange.registry
        registry.set_model_tags(model, {"modelloop.test": "1", "other": "x"})
        registry.set_model_tags(model, {"modelloop.test": "1"})
        tags = registry.model_tags(model)
        assert tags["modelloop.test"] == "1" and tags["other"] == "x"
        with pytest.raises(NotFoundError, match="is not registered"):
            registry.model_tags(unique("ghost"))
        with pytest.raises(NotFoundError):
            registry.set_model_tags(unique("ghost"), {"a": "b"})

    def test_version_tags_are_written_idempotently(self, arrange: Arrange) -> None:
        model = unique()
        version = arrange.register(model)
        registry = arrange.registry
        registry.set_version_tags(model, version, {"modelloop.rollout": "serving"})
        registry.set_version_tags(model, version, {"modelloop.rollout": "serving"})
        first = registry.version(model, version).tags
        registry.set_version_tags(model, version, {"modelloop.rollout": "serving"})
        assert registry.version(model, version).tags == first
        assert first["modelloop.rollout"] == "serving"
        with pytest.raises(NotFoundError):
            registry.set_version_tags(model, "999", {"a": "b"})

    def test_run_tags_are_written_idempotently(self, arrange: Arrange) -> None:
        run_id = arrange.add_run(params={"p": "1"}, metrics={"m": 0.5}, tags={"t": "x"})
        registry = arrange.registry
        registry.set_run_tags(run_id, {"modelloop.kind": "training"})
        registry.set_run_tags(run_id, {"modelloop.kind": "training"})
        run = registry.run(run_id)
        assert run.run_id == run_id
        assert run.params["p"] == "1" and run.metrics["m"] == pytest.approx(0.5)
        assert run.tags["t"] == "x" and run.tags["modelloop.kind"] == "training"
        with pytest.raises(NotFoundError):
            registry.set_run_tags(missing_run_id(), {"a": "b"})

    # --- versions, runs and artifacts that do not exist ---------------------------------------------------
    def test_a_version_names_its_run(self, arrange: Arrange) -> None:
        model = unique()
        run_id = arrange.add_run(params={}, metrics={}, tags={})
        version = arrange.register(model, run_id=run_id)
        info = arrange.registry.version(model, version)
        assert (info.model, info.version, info.run_id) == (model, version, run_id)

    def test_missing_versions_and_runs_are_not_found(self, arrange: Arrange) -> None:
        model = unique()
        arrange.register(model)
        registry = arrange.registry
        with pytest.raises(NotFoundError, match="has no version 999"):
            registry.version(model, "999")
        ghost = unique("ghost")
        with pytest.raises(NotFoundError, match=f"model {ghost} is not registered"):
            registry.version(ghost, "1")
        with pytest.raises(NotFoundError, match="does not exist"):
            registry.run(missing_run_id())

    def test_artifacts(self, arrange: Arrange) -> None:
        run_id = arrange.add_run(params={}, metrics={}, tags={})
        arrange.put_artifact(run_id, "modelloop/notes.txt", b"hello")
        registry = arrange.registry
        assert registry.read_artifact(run_id, "modelloop/notes.txt") == b"hello"
        with pytest.raises(NotFoundError, match=r"has no artifact modelloop/other\.txt"):
            registry.read_artifact(run_id, "modelloop/other.txt")
        with pytest.raises(NotFoundError):
            registry.read_artifact(run_id, "elsewhere/notes.txt")
        with pytest.raises(NotFoundError):
            registry.read_artifact(missing_run_id(), "modelloop/notes.txt")

    # --- the reference profile -------------------------------------------------------------------------
    def test_reference_profile(self, arrange: Arrange) -> None:
        rng = np.random.default_rng(0)
        features = pd.DataFrame({"a": rng.normal(size=50), "b": rng.choice(["x", "y"], size=50)})
        profile = build_profile(features, rng.integers(0, 2, size=50), task="classification")
        model = unique()
        good = arrange.add_run(params={}, metrics={}, tags={})
        arrange.put_artifact(good, REFERENCE_PROFILE_PATH, profile.model_dump_json().encode())
        bad = arrange.add_run(params={}, metrics={}, tags={})
        arrange.put_artifact(bad, REFERENCE_PROFILE_PATH, b'{"not": "a profile"}')
        without = arrange.add_run(params={}, metrics={}, tags={})
        versions = [arrange.register(model, run_id=r) for r in (good, bad, without)]
        registry = arrange.registry
        assert registry.reference_profile(model, versions[0]) == profile
        with pytest.raises(InvalidInputError, match="does not match the schema"):
            registry.reference_profile(model, versions[1])
        with pytest.raises(NotFoundError):
            registry.reference_profile(model, versions[2])
        with pytest.raises(NotFoundError):
            registry.reference_profile(model, "999")


__all__ = ["Arrange", "ModelRegistryContract", "missing_run_id", "unique"]
