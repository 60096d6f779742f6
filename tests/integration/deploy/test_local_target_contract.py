"""The deployment-target contract over the local target, one server per binding and one shared server (real
`modelloop serve` subprocesses); and what only a shared server does: several bindings' models in one
process, added and removed by loading and unloading, restarted together."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelloop.client import ScoringClient
from modelloop.contract.errors import UnavailableError
from modelloop.deploy.bindings import parse_bindings
from modelloop.deploy.errors import PermanentError, RolloutFailedError
from modelloop.deploy.local import LocalTarget
from modelloop.deploy.target import DeploymentSpec
from tests.models import RegisteredModel, register_reference_model
from tests.unit.deploy.target_contract import TargetContract

from .conftest import Registered
from .test_controller_local import rows, wait_for


class TestLocalTargetContract(TargetContract):
    deadline = 60.0

    @pytest.fixture
    def versions(self, deploy_registry: Registered) -> tuple[str, str, str, str]:
        r = deploy_registry
        return (r.model, r.v1.version, r.v2.version, r.broken.version)

    @pytest.fixture
    def target(self, tmp_path: Path, deploy_registry: Registered) -> Iterator[LocalTarget]:
        t = LocalTarget(tracking_uri=deploy_registry.server.url, work_dir=tmp_path)
        try:
            yield t
        finally:
            t.close()


class TestSharedLocalTargetContract(TestLocalTargetContract):
    @pytest.fixture
    def target(self, tmp_path: Path, deploy_registry: Registered) -> Iterator[LocalTarget]:
        t = LocalTarget(tracking_uri=deploy_registry.server.url, work_dir=tmp_path, shared=True)
        try:
            yield t
        finally:
            t.close()


@pytest.fixture(scope="module")
def other_model(deploy_registry: Registered) -> RegisteredModel:
    return register_reference_model(deploy_registry.server.url, "deploy-it-other", max_iter=5)


def models(address: str, admin_token: str) -> dict[str, tuple[str, str | None]]:
    """model -> (champion, challenger) as the server reports them."""
    client = ScoringClient(address, admin_token=admin_token)
    try:
        return {m.name: (m.champion_version, m.challenger_version) for m in client.list_models()}
    finally:
        client.close()


def served(address: str, admin_token: str) -> dict[str, tuple[str, str | None]]:
    """`models`, or nothing while the server is not listening (being restarted)."""
    try:
        return models(address, admin_token)
    except UnavailableError:
        return {}


def spec(name: str, model: str, version: str, challenger: str | None = None) -> DeploymentSpec:
    raw: dict[str, object] = {"name": name, "model": model}
    if challenger is not None:
        raw["challenger"] = {"mode": "shadow"}
    [binding] = parse_bindings({"bindings": [raw]})
    return DeploymentSpec(binding=binding, champion_version=version, challenger_version=challenger)


def test_shared_server_hosts_bindings_side_by_side(
    tmp_path: Path, deploy_registry: Registered, other_model: RegisteredModel
) -> None:
    reg, other = deploy_registry, other_model
    target = LocalTarget(
        tracking_uri=reg.server.url, work_dir=tmp_path, shared=True, restart_backoff=0.2, supervise_every=0.1
    )
    try:
        target.create(spec("a", reg.model, reg.v1.version), deadline=60)
        target.create(spec("b", other.name, other.version), deadline=60)
        address = target.address("a")
        assert target.address("b") == address and target.pid("a") == target.pid("b")
        assert models(address, target.admin_token) == {
            reg.model: (reg.v1.version, None),
            other.name: (other.version, None),
        }
        assert {s.name for s in target.list()} == {"a", "b"}

        # one model, two bindings: refused, nothing changes
        with pytest.raises(PermanentError, match="served by binding a"):
            target.create(spec("c", reg.model, reg.v2.version), deadline=60)
        assert target.get("c") is None and models(address, target.admin_token)[reg.model] == (
            reg.v1.version,
            None,
        )

        # promotions and a failed one touch only their binding's model
        target.update(spec("a", reg.model, reg.v2.version, challenger=reg.v1.version), deadline=60)
        with pytest.raises(RolloutFailedError):
            target.update(spec("a", reg.model, reg.broken.version), deadline=60)
        assert models(address, target.admin_token) == {
            reg.model: (reg.v2.version, reg.v1.version),
            other.name: (other.version, None),
        }

        # a crash restarts both bindings, challenger included, on the same port
        first = target.pid("a")
        assert first is not None
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: target.pid("a") not in (None, first), timeout=60, what="the shared server restarted")
        wait_for(
            lambda: served(address, target.admin_token).get(reg.model) == (reg.v2.version, reg.v1.version),
            timeout=60,
            what="both bindings served again",
        )
        assert models(address, target.admin_token)[other.name] == (other.version, None)
        client = ScoringClient(address)
        try:
            assert len(client.predict(other.name, rows(reg)).predictions) == 2
        finally:
            client.close()

        # removing one binding unloads its model; the last one stops the process
        pid = target.pid("b")
        target.delete("a")
        assert target.get("a") is None and target.pid("b") == pid
        assert set(models(address, target.admin_token)) == {other.name}
        target.delete("b")
        assert target.list() == []
        with pytest.raises(UnavailableError):  # nothing listens there any more
            models(address, target.admin_token)
    finally:
        target.close()
