"""Test infrastructure: where the Kubernetes tests get a real control plane.

One setting, `MODELLOOP_TEST_K8S_CONTROL_PLANE`, names a folder holding `control-plane` (the shared
`shared/k8s` tool: etcd, kube-apiserver, kube-controller-manager, kube-scheduler on loopback). `.ci/run`
sets it when that folder exists; without it the Kubernetes tests are deselected and pytest says in one line
how to run them. The state folder is `.cache/k8s/control-plane` (the decompressed binaries are reused; etcd's
data is removed before each start, so every session gets an empty cluster). A session holds an exclusive lock
on the folder from start to `down`: a second pytest session in the same checkout waits for it instead of
stopping the first one's cluster under its tests.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

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
    lock: IO[bytes] | None = field(default=None, repr=False)  # held from start to down

    @property
    def kubeconfig(self) -> Path:
        return self.state / "admin.kubeconfig"

    @property
    def pki(self) -> Path:
        return self.state / "pki"

    @property
    def bin(self) -> Path:
        return self.state / "bin"

    def down_processes(self) -> None:
        """Stop a cluster a crashed session left running in this folder (the lock is ours)."""
        subprocess.run(
            [str(self.script), "down", str(self.state)], capture_output=True, timeout=60, check=False
        )

    def down(self) -> None:
        """Stop the cluster and release the folder to the next session."""
        self.down_processes()
        if self.lock is not None:
            self.lock.close()  # releases the flock
            self.lock = None


def _lock(state: Path, timeout: float = 3600.0) -> IO[bytes]:
    """An exclusive lock on the state folder; waits (saying so once) while another session has it."""
    handle = (state.parent / f"{state.name}.lock").open("ab")
    waited = False
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return handle
        except BlockingIOError:
            if time.monotonic() > deadline:
                handle.close()
                raise RuntimeError(f"{state} stayed in use by another session for {timeout:.0f} s") from None
            if not waited:
                print(f"waiting for another test session to release {state}", file=sys.stderr)
                waited = True
            time.sleep(2)


def start(script: Path, state: Path | None = None) -> ControlPlane:
    """Start an empty cluster (stopping one left in the same folder first)."""
    state = state or ROOT / ".cache" / "k8s" / "control-plane"
    state.mkdir(parents=True, exist_ok=True)
    plane = ControlPlane(script, state, _lock(state))
    plane.down_processes()
    shutil.rmtree(state / "etcd", ignore_errors=True)
    done = subprocess.run(
        [str(script), "up", str(state)], capture_output=True, text=True, timeout=300, check=False
    )
    if done.returncode != 0:
        plane.down()
        raise RuntimeError(f"control plane did not start:\n{done.stderr[-3000:]}")
    return plane


__all__ = ["HOW_TO_RUN", "SETTING", "ControlPlane", "start", "tool"]
