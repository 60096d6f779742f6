"""The end-to-end suites.

- `control_plane` tests run the Helm chart, the controller under the chart's own ServiceAccount and the
  scoring pods on a real Kubernetes control plane started for the session (`tests/kube/control_plane.py`),
  with the node stand-in running pods as local processes (`tests/kube/node.py`). `make test` runs them when
  `MODELLOOP_TEST_K8S_CONTROL_PLANE` names the folder of the `control-plane` tool (`.ci/run` sets it);
  without it they are deselected and pytest says in one line how to run them.
- `k8s` tests run the Kubernetes target against the cluster named by `KUBECONFIG` (e.g. kind), selected with
  `-m k8s` (`make test` deselects them); without `KUBECONFIG` each fails saying what to set.
See tests/e2e/README.md.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kube import control_plane
from tests.kube.node import NodeStandIn


@pytest.fixture
def cluster() -> str:
    """The kubeconfig the `k8s` suite runs against."""
    return required("KUBECONFIG")


def required(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} must be set for the k8s suite (see tests/e2e/README.md)")
    return value


@pytest.fixture(scope="session")
def plane() -> Iterator[control_plane.ControlPlane]:
    """A real, empty control plane for the session (etcd, kube-apiserver, controller manager, scheduler)."""
    script = control_plane.tool()
    if script is None:
        pytest.fail(control_plane.HOW_TO_RUN)
    running = control_plane.start(script)
    try:
        yield running
    finally:
        running.down()


@pytest.fixture(scope="session")
def node(plane: control_plane.ControlPlane) -> Iterator[NodeStandIn]:
    """The node stand-in: pods bound to it run as local processes of this project's environment."""
    work = Path(tempfile.mkdtemp(prefix="modelloop-node-"))
    standin = NodeStandIn(plane.kubeconfig, work)
    standin.start()
    try:
        yield standin
    finally:
        standin.stop()
