"""Fixtures for the chart tests: the real Helm 3 and Helm 4 binaries (`make helm-bin` fetches them to
.cache/helm/v3/helm and .cache/helm/v4/helm; MODELLOOP_TEST_HELM3 / MODELLOOP_TEST_HELM4 override), and the
chart rendered with `helm template` for each values file, cached per session. A missing binary fails the
tests that need it; nothing is skipped.

`render` tells Helm the cluster serves the Prometheus Operator's API (monitoring.coreos.com/v1), as a
production cluster does, unless a test passes other `api_versions` (e.g. none: a cluster without it)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / "helm" / "modelloop"
CI_VALUES = sorted((CHART / "ci").glob("*.yaml"))
RELEASE = "ml"
NAMESPACE = "models"
HELM_MAJORS = ["v3", "v4"]
PROMETHEUS_OPERATOR_API = "monitoring.coreos.com/v1"
DEFAULT_API_VERSIONS = (PROMETHEUS_OPERATOR_API,)

Manifest = dict[str, Any]


def helm_path(major: str) -> Path:
    override = os.environ.get(f"MODELLOOP_TEST_HELM{major[1:]}")
    return Path(override) if override else ROOT / ".cache" / "helm" / major / "helm"


def run_helm(major: str, *args: str) -> subprocess.CompletedProcess[str]:
    helm = helm_path(major)
    if not os.access(helm, os.X_OK):
        pytest.fail(f"no helm {major} binary at {helm}: run `make helm-bin` (tools/fetch-helm.sh)")
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(ROOT / ".cache" / "helm" / "home"),
        "HELM_CACHE_HOME": str(ROOT / ".cache" / "helm" / "home" / "cache"),
        "HELM_CONFIG_HOME": str(ROOT / ".cache" / "helm" / "home" / "config"),
        "HELM_DATA_HOME": str(ROOT / ".cache" / "helm" / "home" / "data"),
    }
    return subprocess.run(
        [str(helm), *args], capture_output=True, text=True, timeout=120, env=env, check=False
    )


@cache
def _render(
    major: str,
    values: tuple[str, ...],
    sets: tuple[str, ...],
    api_versions: tuple[str, ...] = DEFAULT_API_VERSIONS,
) -> tuple[Manifest, ...]:
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--include-crds"]
    for version in api_versions:
        args += ["--api-versions", version]
    for path in values:
        args += ["-f", path]
    for item in sets:
        args += ["--set", item]
    done = run_helm(major, *args)
    assert done.returncode == 0, done.stderr
    return tuple(doc for doc in yaml.safe_load_all(done.stdout) if doc)


def render(
    major: str,
    values: list[Path] | None = None,
    sets: list[str] | None = None,
    *,
    api_versions: tuple[str, ...] = DEFAULT_API_VERSIONS,
) -> list[Manifest]:
    """Every object `helm template` renders (test hooks included), parsed. The cluster is taken to serve
    `api_versions` beyond the built-in ones (default: the Prometheus Operator's; `()` for none)."""
    return list(_render(major, tuple(str(v) for v in values or []), tuple(sets or []), tuple(api_versions)))


@pytest.fixture(params=HELM_MAJORS)
def helm_major(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def helm(helm_major: str) -> Callable[..., subprocess.CompletedProcess[str]]:
    return lambda *args: run_helm(helm_major, *args)


def by_kind(objects: list[Manifest], kind: str) -> list[Manifest]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[Manifest], kind: str, name: str) -> Manifest:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def pod_spec(obj: Manifest) -> Manifest | None:
    """The pod spec inside a workload object (None for objects without pods)."""
    kind = obj["kind"]
    if kind == "Pod":
        return dict(obj["spec"])
    if kind in {"Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"}:
        return dict(obj["spec"]["template"]["spec"])
    if kind == "CronJob":
        return dict(obj["spec"]["jobTemplate"]["spec"]["template"]["spec"])
    return None
