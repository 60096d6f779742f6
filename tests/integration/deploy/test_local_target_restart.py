"""The local target's supervisor: a scoring server that dies is restarted on the same port with the versions
it served, with growing pauses between attempts while it keeps failing (real `modelloop serve` subprocesses,
real gRPC calls)."""

from __future__ import annotations

import itertools
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelloop.client import ScoringClient
from modelloop.contract.errors import ModelloopError
from modelloop.deploy.bindings import parse_bindings
from modelloop.deploy.local import LocalTarget
from modelloop.deploy.local_process import ServerProcess
from modelloop.deploy.target import DeploymentSpec

from .conftest import Registered
from .test_controller_local import rows, wait_for


class FlakyLocalTarget(LocalTarget):
    """The real local target, except that while `crash` is set its servers exit at once (code 3); every
    start attempt's time is recorded (each attempt runs the command once)."""

    def __init__(self, **kwargs: object) -> None:
        self.crash = threading.Event()
        self.starts: list[float] = []
        super().__init__(**kwargs)  # type: ignore[arg-type]

    def command(self, server: ServerProcess) -> list[str]:
        self.starts.append(time.monotonic())
        if self.crash.is_set():
            return [sys.executable, "-c", "import sys; sys.exit(3)"]
        return super().command(server)


@pytest.fixture
def target(tmp_path: Path, deploy_registry: Registered) -> Iterator[FlakyLocalTarget]:
    t = FlakyLocalTarget(
        tracking_uri=deploy_registry.server.url,
        work_dir=tmp_path,
        restart_backoff=0.3,
        max_backoff=1.2,
        supervise_every=0.05,
    )
    try:
        yield t
    finally:
        t.close()


def answers(target: LocalTarget, reg: Registered) -> bool:
    """The server answers a prediction from the version it should serve."""
    client = ScoringClient(target.address("flaky"))
    try:
        result = client.predict(reg.model, rows(reg))
    except ModelloopError:
        return False
    finally:
        client.close()
    return len(result.predictions) == 2 and result.model_version == reg.v2.version


def test_killed_server_is_restarted_with_backoff_on_the_same_port(
    target: FlakyLocalTarget, deploy_registry: Registered
) -> None:
    reg = deploy_registry
    [binding] = parse_bindings({"bindings": [{"name": "flaky", "model": reg.model}]})
    target.create(DeploymentSpec(binding=binding, champion_version=reg.v2.version), deadline=60)
    address, first = target.address("flaky"), target.pid("flaky")
    assert first is not None and answers(target, reg)

    # a plain crash: restarted at once, same port, same version
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: target.pid("flaky") not in (None, first), timeout=60, what="a new server")
    wait_for(lambda: answers(target, reg), timeout=60, what="the restarted server answering")
    assert target.address("flaky") == address and len(target.starts) == 2  # create + one restart
    state = target.get("flaky")
    assert state is not None and state.champion_version == reg.v2.version

    # a server that keeps crashing: attempts spaced 0.3, 0.6, 1.2, 1.2 s (capped), then it recovers
    target.crash.set()
    second = target.pid("flaky")
    assert second is not None
    before = len(target.starts)
    os.kill(second, signal.SIGKILL)
    wait_for(lambda: len(target.starts) >= before + 5, timeout=30, what="five restart attempts")
    target.crash.clear()
    attempts = target.starts[before : before + 5]
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    # each pause is at least its attempt's backoff (more if the first crash still counted)
    assert all(g >= min(1.2, 0.3 * 2**i) - 0.01 for i, g in enumerate(gaps)), gaps
    assert target.restarts("flaky") >= 5
    wait_for(lambda: answers(target, reg), timeout=60, what="recovery once starts succeed again")
    assert target.address("flaky") == address
