"""`modelloop controller` as a real process: settings from flags and environment, the local target (shared
server), the webhook receiver registered with `modelloop webhook register`, promotions by alias, a clean
SIGTERM."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import mlflow
from click.testing import CliRunner

from modelloop.cli import cli
from modelloop.client import ScoringClient
from modelloop.contract.port_file import read_port_file

from .conftest import Registered
from .test_controller_local import field, wait_for


def champion_at(address: str, model: str, admin_token: str) -> str | None:
    client = ScoringClient(address, admin_token=admin_token)
    try:
        return next(
            (str(field(m, "champion_version")) for m in client.list_models() if field(m, "name") == model),
            None,
        )
    except Exception:
        return None
    finally:
        client.close()


def test_controller_process_follows_the_alias_and_stops_cleanly(
    deploy_registry: Registered, tmp_path: Path
) -> None:
    reg = deploy_registry
    (tmp_path / "bindings.yaml").write_text(
        f"bindings:\n  - name: cli\n    model: {reg.model}\n    alias: cli-prod\n"
    )
    (tmp_path / "secret").write_text("controller-cli-secret\n")
    env = {
        **os.environ,
        "MODELLOOP_DATA_DIR": str(tmp_path / "data"),
        "MODELLOOP_PREDICTION_LOG_URL": "none",
        "OMP_NUM_THREADS": "1",
        "MODELLOOP_LOCAL_SHARED": "true",  # settings from the environment: one shared scoring server
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "modelloop", "controller", "--bindings", str(tmp_path / "bindings.yaml"),
         "--tracking-uri", reg.server.url, "--webhook-port", "0", "--webhook-secret-file",
         str(tmp_path / "secret"), "--poll-interval", "3600"],
        env=env, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stderr is not None
    reader = threading.Thread(target=lambda: [lines.put(line) for line in proc.stderr], daemon=True)  # type: ignore[union-attr]
    reader.start()
    client = mlflow.MlflowClient(reg.server.url)
    hook_ids: list[str] = []
    try:
        url = None
        deadline = time.monotonic() + 60
        while url is None:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            if line.startswith("webhook receiver at "):
                url = line.split(" at ", 1)[1].strip()
        registered = CliRunner().invoke(cli, ["webhook", "register", "--url", url, "--secret-file",
                                              str(tmp_path / "secret"), "--tracking-uri", reg.server.url,
                                              "--name", "controller-cli"])  # fmt: skip
        assert registered.exit_code == 0, registered.output
        hook_ids = [w.webhook_id for w in client.list_webhooks() if w.name == "controller-cli"]
        time.sleep(1.5)  # the server's webhook list cache (1 s here)

        client.set_registered_model_alias(reg.model, "cli-prod", reg.v1.version)
        port_file = tmp_path / "data" / "serving" / "shared.port"
        wait_for(
            lambda: read_port_file(port_file) is not None, timeout=90, what="the scoring server's port file"
        )
        ports = read_port_file(port_file)
        assert ports is not None
        address = f"127.0.0.1:{ports.grpc}"
        # the controller's own admin credential: a file only this user can read, beside the port file
        admin = (tmp_path / "data" / "serving" / "admin-token").read_text()
        wait_for(
            lambda: champion_at(address, reg.model, admin) == reg.v1.version, timeout=90, what="v1 served"
        )
        client.set_registered_model_alias(reg.model, "cli-prod", reg.v2.version)
        wait_for(
            lambda: champion_at(address, reg.model, admin) == reg.v2.version, timeout=90, what="v2 swapped in"
        )

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        assert champion_at(address, reg.model, admin) is None  # its scoring server went with it
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for hook_id in hook_ids:
            client.delete_webhook(hook_id)
        client.delete_registered_model_alias(reg.model, "cli-prod")
