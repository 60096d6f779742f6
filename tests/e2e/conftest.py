"""The opt-in end-to-end suite: runs against the real cluster named by `KUBECONFIG` (e.g. kind). It is
selected with `-m k8s` (`make test` deselects it); selected without `KUBECONFIG`, each test fails with a
message saying what to set, never a silent skip. See tests/e2e/README.md."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def cluster() -> str:
    """The kubeconfig every test of this suite runs against."""
    return required("KUBECONFIG")


def required(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} must be set for the k8s suite (see tests/e2e/README.md)")
    return value
