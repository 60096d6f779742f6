"""How many worker processes `modelloop serve` runs by default: the CPUs this process may use, from its
affinity and its cgroup's CPU quota (v2 `cpu.max`, v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`), the quota
rounded up, at least 1. Called by `serving.workers.resolve_workers`."""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def cgroup_quota(root: Path = CGROUP_ROOT) -> float | None:
    """CPUs the cgroup's quota allows (e.g. 1.5), or None when unlimited or unreadable."""
    try:
        fields = (root / "cpu.max").read_text().split()
        quota, period = fields[0], fields[1] if len(fields) > 1 else "100000"
    except (OSError, IndexError):
        return _cgroup_v1_quota(root)
    if quota == "max":
        return None
    return _ratio(quota, period)


def _cgroup_v1_quota(root: Path) -> float | None:
    for folder in (root / "cpu", root / "cpu,cpuacct", root):
        try:
            quota = (folder / "cpu.cfs_quota_us").read_text().strip()
            period = (folder / "cpu.cfs_period_us").read_text().strip()
        except OSError:
            continue
        return None if quota.startswith("-") else _ratio(quota, period)
    return None


def _ratio(quota: str, period: str) -> float | None:
    try:
        q, p = int(quota), int(period)
    except ValueError:
        return None
    return q / p if q > 0 and p > 0 else None


def affinity_cpus() -> int:
    """CPUs this process may run on (its affinity mask), or the machine's count where there is none."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def usable_cpus(*, affinity: int | None = None, cgroup_root: Path = CGROUP_ROOT) -> int:
    """min(affinity, ceil(quota)), at least 1."""
    cpus = affinity_cpus() if affinity is None else affinity
    quota = cgroup_quota(cgroup_root)
    if quota is not None:
        cpus = min(cpus, math.ceil(quota))
    return max(1, cpus)


__all__ = ["CGROUP_ROOT", "affinity_cpus", "cgroup_quota", "usable_cpus"]
