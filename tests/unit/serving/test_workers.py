"""The default worker count of `modelloop serve` (issue 14): the CPUs the process may use, from its affinity
and a fake cgroup's CPU quota (v2 `cpu.max`, v1 `cpu.cfs_quota_us`/`cpu.cfs_period_us`), rounded up, at
least 1; and the supervisor's plan of what a restarted worker loads after swaps and unloads."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelloop.contract.wire.admin import ModelStatus
from modelloop.serving.app import Challenger, LoadPlan
from modelloop.serving.settings import ServeSettings
from modelloop.serving.workers import resolve_workers
from modelloop.serving.workers.cpus import cgroup_quota, usable_cpus
from modelloop.serving.workers.supervisor import _apply, _plan_of


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
