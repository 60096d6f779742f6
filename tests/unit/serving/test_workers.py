"""The default worker count of `modelloop serve` (issue 14): the CPUs the process may use, from its affinity
and a fake cgroup's CPU quota (v2 `cpu.max`, v1 `cpu.cfs_quota_us`/`cpu.cfs_period_us`), rounded up, at
least 1; the supervisor's plan of what a restarted worker loads after swaps and unloads; and how a worker
learns whether every worker serves (told, never polling)."""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from modelloop.contract.wire.admin import ModelStatus
from modelloop.serving.app import Challenger, LoadPlan
from modelloop.serving.settings import ServeSettings
from modelloop.serving.workers import resolve_workers
from modelloop.serving.workers.cpus import cgroup_quota, usable_cpus
from modelloop.serving.workers.supervisor import _apply, _plan_of
from modelloop.serving.workers.worker import WorkerLink


@pytest.mark.parametrize(
    ("cpu_max", "affinity", "expected"),
    [
        ("max 100000", 4, 4),  # no quota: the affinity
        ("150000 100000", 4, 2),  # 1.5 CPUs: rounded up
        ("200000 100000", 4, 2),
        ("400000 100000", 2, 2),  # a quota above the affinity: the affinity
        ("50000 100000", 4, 1),  # half a CPU: at least 1
        ("100000 100000", 1, 1),
    ],
)
def test_cgroup_v2_quota_and_affinity(tmp_path: Path, cpu_max: str, affinity: int, expected: int) -> None:
    (tmp_path / "cpu.max").write_text(cpu_max + "\n")
    assert usable_cpus(affinity=affinity, cgroup_root=tmp_path) == expected


def test_cgroup_v1_quota(tmp_path: Path) -> None:
    folder = tmp_path / "cpu"
    folder.mkdir()
    (folder / "cpu.cfs_quota_us").write_text("250000\n")
    (folder / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_quota(tmp_path) == 2.5
    assert usable_cpus(affinity=8, cgroup_root=tmp_path) == 3
    (folder / "cpu.cfs_quota_us").write_text("-1\n")  # unlimited
    assert usable_cpus(affinity=8, cgroup_root=tmp_path) == 8


def test_no_cgroup_files_means_the_affinity(tmp_path: Path) -> None:
    assert cgroup_quota(tmp_path) is None
    assert usable_cpus(affinity=3, cgroup_root=tmp_path) == 3


def test_the_default_follows_the_process_affinity(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import modelloop.serving.workers.cpus as cpus

    monkeypatch.setattr(cpus.os, "sched_getaffinity", lambda pid: {0, 1, 2})
    monkeypatch.setattr(cpus, "CGROUP_ROOT", tmp_path)
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert usable_cpus(cgroup_root=tmp_path) == 3
    assert resolve_workers(ServeSettings(models=["m/1"], workers=2)) == 2  # an explicit count wins


def test_the_plan_pins_versions_and_follows_swaps_and_unloads() -> None:
    plan = _plan_of(
        [ModelStatus("a", "3", None, None, 0.0, True), ModelStatus("b", "1", "2", "canary", 0.2, True)]
    )
    assert plan == LoadPlan([("a", "3"), ("b", "1")], [Challenger("b", "2", "canary", 0.2)])
    plan = _apply(plan, ModelStatus("a", "4", "5", "shadow", 0.1, True), unload=None)
    assert ("a", "4") in plan.refs and Challenger("a", "5", "shadow", 0.1) in plan.challengers
    plan = _apply(plan, None, unload=("b", "challenger"))
    assert ("b", "1") in plan.refs and all(c.name != "b" for c in plan.challengers)
    plan = _apply(plan, None, unload=("a", "champion"))
    assert plan == LoadPlan([("b", "1")], [])


class _Host:
    def list(self) -> list[ModelStatus]:
        return []


class _Server:
    """What a worker tells its gRPC server about its peers, in order (a check may repeat the last one)."""

    def __init__(self) -> None:
        self.told: list[bool] = []

    async def set_peers_ready(self, ready: bool) -> None:
        self.told.append(ready)


async def _until(condition: Callable[[], bool], what: str) -> None:
    for _ in range(2000):  # a bound so a broken link fails instead of hanging; not a timed assertion
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"never happened: {what}")


def test_a_worker_reads_its_peers_states_only_when_the_supervisor_says_they_changed() -> None:
    """Health across workers without polling: a worker checks the shared states when it starts and on every
    ("peers",) from the supervisor; it says "serving" (the supervisor's cue for the port file) once."""

    async def scenario() -> None:
        ours, theirs = multiprocessing.Pipe(duplex=True)
        states = [0, 0]
        server = _Server()
        link = WorkerLink(theirs, 0, states)
        ours.send(("peers",))  # before it serves: ignored (it checks when it starts)
        link.attach(_Host(), server)  # type: ignore[arg-type]
        link.started(1, None)
        assert ours.recv() == ("ready", [])
        await _until(lambda: server.told[-1:] == [False], "not every worker serves")
        states[1] = 1
        ours.send(("peers",))
        await _until(lambda: server.told[-1:] == [True], "every worker serves")
        assert ours.recv() == ("serving",)
        states[1] = 0  # the other worker died
        ours.send(("peers",))
        await _until(lambda: server.told[-1:] == [False], "a worker is gone")
        states[1] = 1  # restarted
        ours.send(("peers",))
        await _until(lambda: server.told[-1:] == [True], "every worker serves again")
        assert not ours.poll()  # "serving" was said once
        ours.close()  # the supervisor is gone: the reader thread ends
        await _until(lambda: not any(t.name == "worker-link" for t in threading.enumerate()), "reader ends")

    asyncio.run(scenario())
