"""How many local shards run at once: the cores this process may use, its CPU affinity capped by its
container's CPU quota (cgroup v2 `cpu.max`)."""

from __future__ import annotations

import os
from pathlib import Path

from modelloop.cli.local_shards import usable_cores


def test_the_cgroup_quota_caps_the_affinity(tmp_path: Path) -> None:
    affinity = len(os.sched_getaffinity(0))
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("max 100000\n")
    assert usable_cores(cpu_max) == affinity
    cpu_max.write_text("50000 100000\n")  # half a core: still one shard at a time
    assert usable_cores(cpu_max) == 1
    cpu_max.write_text("150000 100000\n")  # 1.5 cores: two, when the affinity allows them
    assert usable_cores(cpu_max) == min(affinity, 2)
    assert usable_cores(tmp_path / "absent") == affinity  # no cgroup v2 file: the affinity alone
