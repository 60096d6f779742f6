"""Test infrastructure: where the Kubernetes tests get a real control plane.

One setting, `MODELLOOP_TEST_K8S_CONTROL_PLANE`, names a folder holding `control-plane` (the shared
`shared/k8s` tool: etcd, kube-apiserver, kube-controller-manager, kube-scheduler on loopback). `.ci/run`
sets it when that folder exists; without it the Kubernetes tests are deselected and pytest says in one line
how to run them. The state folder is `.cache/k8s/control-plane` (the decompressed binaries are reused; etcd's
data is removed before each start, so every session gets an empty cluster).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SETTING = "MODELLOOP_TEST_K8S_CONTROL_PLANE"
HOW_TO_RUN = (
    f"Kubernetes tests not run: set {SETTING} to the folder holding `control-plane` "
    "(e.g. ../shared/k8s; .ci/run does) to run them against a real control plane"
)


def tool() -> Path | None:
    """The `control-plane` script the setting names, or None when unset."""
    folder = os.environ.get(SETTING)
    if not folder:
        return None
    script = Path(folder).expanduser().resolve() / "control-plane"
    if not os.access(script, os.X_OK):
        raise RuntimeError(f"{SETTING}={folder}: no executable control-plane script there")
    return script


@dataclass
class ControlPlane:
    """A running control plane: its state folder and admin kubeconfig."""

    script: Path
    state: Path

    @property
    def kubeconfig(self) -> Path:
        return self.state / "admin.kubeconfig"

    @property
    def pki(self) -> Path:
        return self.state / "pki"

    @property
    def bin(self) -> Path:
        return self.state / "bin"

    def down(self) -> None:
        subprocess.run(
            [str(self.script), "down", str(self.state)], capture_output=True, timeout=60, check=False
        )


def start(script: Path, state: Path | None = None) -> ControlPlane:
    """Start an empty cluster (stopping one left in the same folder first)."""
    state = state or ROOT / ".cache" / "k8s" / "control-plane"
    state.mkdir(parents=True, exist_ok=True)
    plane = ControlPlane(script, state)
    plane.down()
    shutil.rmtree(state / "etcd", ignore_errors=True)
    done = subprocess.run(
        [str(script), "up", str(state)], capture_output=True, text=True, timeout=300, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"control plane did not start:\n{done.stderr[-3000:]}")
    return plane


__all__ = ["HOW_TO_RUN", "SETTING", "ControlPlane", "start", "tool"]
