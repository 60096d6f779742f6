"""The deployment-target contract, one suite run over every implementation (see deploy/target.py).

A test module subclasses `TargetContract` and provides the `target` fixture and `versions` (model name, two
good versions, one broken version) that the target can serve.
"""

from __future__ import annotations

import pytest

from modelloop.deploy.bindings import parse_bindings
from modelloop.deploy.errors import RolloutFailedError
from modelloop.deploy.target import DeploymentSpec, DeploymentTarget


class TargetContract:
    deadline = 120.0

    @pytest.fixture
    def versions(self) -> tuple[str, str, str, str]:
        raise NotImplementedError

    def spec(
        self,
        model: str,
        version: str,
        name: str = "contract",
        *,
        challenger: str | None = None,
        mode: str = "shadow",
    ) -> DeploymentSpec:
        raw: dict[str, object] = {"name": name, "model": model}
        if challenger is not None:
            raw["challenger"] = {"mode": mode, **({"share": 0.25} if mode == "canary" else {})}
        [binding] = parse_bindings({"bindings": [raw]})
        return DeploymentSpec(binding=binding, champion_version=version, challenger_version=challenger)

    def test_lifecycle(self, target: DeploymentTarget, versions: tuple[str, str, str, str]) -> None:
        model, v1, v2, broken = versions
        assert target.get("contract") is None
        state = target.create(self.spec(model, v1), deadline=self.deadline)
        assert state.champion_version == v1 and state.matches(self.spec(model, v1))
        got = target.get("contract")
        assert got is not None and got.champion_version == v1
        assert [s.name for s in target.list()] == ["contract"]
        with pytest.raises(RolloutFailedError):
            target.update(self.spec(model, broken), deadline=self.deadline)
        got = target.get("contract")
        assert got is not None and got.champion_version == v1 and got.ready
        state = target.update(self.spec(model, v2), deadline=self.deadline)
        assert state.champion_version == v2
        target.delete("contract")
        assert target.get("contract") is None
        target.delete("contract")  # deleting a missing deployment is no error

    def test_create_broken_leaves_nothing(
        self, target: DeploymentTarget, versions: tuple[str, str, str, str]
    ) -> None:
        model, _, _, broken = versions
        with pytest.raises(RolloutFailedError):
            target.create(self.spec(model, broken, name="broken"), deadline=self.deadline)
        assert target.get("broken") is None

    def test_challenger_added_changed_and_removed(
        self, target: DeploymentTarget, versions: tuple[str, str, str, str]
    ) -> None:
        model, v1, v2, _ = versions
        assert target.list() == []
        shadow = self.spec(model, v1, "duo", challenger=v2)
        state = target.create(shadow, deadline=self.deadline)
        assert (state.champion_version, state.challenger_version, state.mode) == (v1, v2, "shadow")
        got = target.get("duo")
        assert got is not None and got.matches(shadow)
        canary = self.spec(model, v1, "duo", challenger=v2, mode="canary")
        assert not got.matches(canary)
        state = target.update(canary, deadline=self.deadline)
        assert state.matches(canary) and state.mode == "canary"
        alone = self.spec(model, v2, "duo")
        state = target.update(alone, deadline=self.deadline)
        assert (state.champion_version, state.challenger_version) == (v2, None) and state.matches(alone)
        target.delete("duo")
        assert target.get("duo") is None and target.list() == []
