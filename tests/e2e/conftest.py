"""The opt-in end-to-end suite: runs against the real cluster named by `KUBECONFIG` (e.g. kind), and is
skipped when `KUBECONFIG` is not set (the only skip in the project). See tests/e2e/README.md."""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("KUBECONFIG"):
        return
    skip = pytest.mark.skip(reason="needs a Kubernetes cluster: set KUBECONFIG (see tests/e2e/README.md)")
    for item in items:
        if "k8s" in item.keywords:
            item.add_marker(skip)


def required(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} must be set for the k8s suite (see tests/e2e/README.md)")
    return value
