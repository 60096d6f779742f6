"""The deployment-target contract over the local target: real `modelloop serve` subprocesses."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.local import LocalTarget
from tests.unit.deploy.target_contract import TargetContract

from .conftest import Registered


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
