import pytest

from modelloop.deploy.fake import FakeTarget

from .target_contract import TargetContract


class TestFakeTarget(TargetContract):
    @pytest.fixture
    def versions(self) -> tuple[str, str, str, str]:
        return ("m", "1", "2", "3")

    @pytest.fixture
    def target(self) -> FakeTarget:
        return FakeTarget(broken={("m", "3")})
