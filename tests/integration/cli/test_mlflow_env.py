"""MLflow's own environment variables reach MLflow through every command (issue 12, finding 8).

Each command that talks to MLflow runs as a real subprocess with only `MLFLOW_TRACKING_URI` naming the
session's real `mlflow server` (no `MODELLOOP_TRACKING_URI`, no `--tracking-uri`): it reaches that server
instead of the default http://127.0.0.1:5000. Then the credentials: the controller and the scoring server it
starts talk to MLflow through a proxy that refuses calls without the credentials MLflow's client takes from
`MLFLOW_TRACKING_USERNAME`/`MLFLOW_TRACKING_PASSWORD` (or `MLFLOW_TRACKING_TOKEN`), so a process that dropped
them would fail. `modelloop feedback` only writes the prediction log and never talks to MLflow; `up` and
`demo` start an MLflow server of their own.
"""

from __future__ import annotations

import base64
import http.client
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
import yaml
from mlflow import MlflowClient

from modelloop.client import ScoringClient
from modelloop.contract.port_file import read_port_file
from modelloop.contract.predlog.store import open_prediction_log
from modelloop.contract.registry import MONITORING_EXPERIMENT, TAG_ROLLOUT
from tests.integration.monitoring.conftest import WINDOW, Monitored, window_batches, write
from tests.models import RegisteredModel, register_reference_model

MODEL = "mlflow-env"
ALIAS = "production"
#: refused calls fail at once instead of MLflow's default minutes of retries
FAST = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


@pytest.fixture(scope="module")
def registered(mlflow_server: str) -> RegisteredModel:
    model = register_reference_model(mlflow_server, MODEL, max_iter=5)
    MlflowClient(mlflow_server).set_registered_model_alias(MODEL, ALIAS, model.version)
    return model


def mlflow_env(tmp_path: Path, **variables: str) -> dict[str, str]:
    """This process's environment with no modelloop tracking setting, and MLflow's variables as given."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k != "MODELLOOP_TRACKING_URI" and not k.startswith(("MLFLOW_TRACKING_", "MODELLOOP_"))
    }
    env.update(FAST, OMP_NUM_THREADS="1", MODELLOOP_DATA_DIR=str(tmp_path / "state"), **variables)
    return env


def modelloop(*args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelloop", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def wait_for_file(path: Path, proc: subprocess.Popen[str], timeout: float) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(
                f"exited with {proc.returncode}: {proc.stdout.read() if proc.stdout else ''}"
            )
        if time.monotonic() > end:
            raise AssertionError(f"{path} did not appear within {timeout:.0f} s")
        time.sleep(0.1)


def test_serve_loads_from_mlflow_tracking_uri(
    mlflow_server: str, registered: RegisteredModel, tmp_path: Path
) -> None:
    port_file = tmp_path / "serve.port"
    proc = subprocess.Popen(
        [sys.executable, "-m", "modelloop", "serve", "--model", f"{MODEL}@{ALIAS}", "--port", "0",
         "--port-file", str(port_file), "--metrics-port", "0", "--prediction-log-url", "none"],
        env=mlflow_env(tmp_path, MLFLOW_TRACKING_URI=mlflow_server),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        wait_for_file(port_file, proc, timeout=120)
        ports = read_port_file(port_file)
        assert ports is not None
        address = f"127.0.0.1:{ports.grpc}"
        with ScoringClient(address) as client:
            result = client.predict(MODEL, registered.features.head(2))
        assert result.model_version == registered.version and len(result.predictions) == 2
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_train_records_in_mlflow_tracking_uri(mlflow_server: str, tmp_path: Path) -> None:
    config = tmp_path / "train.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "model_name": "mlflow-env-train",
                "dataset": {"name": "sklearn:wine"},
                "split": {"kind": "stratified"},
                "estimator": {"family": "logistic_regression"},
                "metric": {"name": "accuracy"},
                "study": {"n_trials": 1},
            }
        )
    )
    done = modelloop(
        "train",
        "--config",
        str(config),
        "--quiet",
        env=mlflow_env(tmp_path, MLFLOW_TRACKING_URI=mlflow_server),
    )
    assert done.returncode == 0, done.stderr
    lines = dict(line.split(": ", 1) for line in done.stdout.splitlines() if ": " in line)
    run = MlflowClient(mlflow_server).get_run(lines["run_id"])
    assert run.info.status == "FINISHED"
    assert lines["mlflow ui"].startswith(f"{mlflow_server}/#/experiments/")


def test_monitor_records_its_window_in_mlflow_tracking_uri(
    mlflow_server: str, registered: RegisteredModel, tmp_path: Path
) -> None:
    end = int(time.time())
    start = end - int(WINDOW)
    log_url = f"sqlite:///{tmp_path / 'log.db'}"
    store = open_prediction_log(log_url)  # an empty window is not a run: log some traffic first
    try:
        labels = np.zeros(len(registered.features), dtype=np.int64)
        write(store, window_batches(Monitored(registered, labels), start, 60, seed=1))
    finally:
        store.close()
    done = modelloop(
        "monitor", "--model", MODEL, "--start", str(start), "--end", str(end), "--no-retrain",
        "--prediction-log-url", log_url,
        env=mlflow_env(tmp_path, MLFLOW_TRACKING_URI=mlflow_server),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    run_id = done.stdout.rsplit("run=", 1)[1].strip()
    run = MlflowClient(mlflow_server).get_run(run_id)
    experiment = MlflowClient(mlflow_server).get_experiment(run.info.experiment_id)
    assert experiment.name == MONITORING_EXPERIMENT


@pytest.fixture
def deployable(mlflow_server: str, registered: RegisteredModel) -> RegisteredModel:
    """The version at the alias, without the outcome of an earlier rollout (a failed one is never retried)."""
    client = MlflowClient(mlflow_server)
    client.set_registered_model_alias(MODEL, ALIAS, registered.version)
    if TAG_ROLLOUT in client.get_model_version(MODEL, registered.version).tags:
        client.delete_model_version_tag(MODEL, registered.version, TAG_ROLLOUT)
    return registered


def _bindings(tmp_path: Path) -> Path:
    path = tmp_path / "bindings.yaml"
    path.write_text(f"bindings:\n  - name: env\n    model: {MODEL}\n    alias: {ALIAS}\n")
    return path


def test_controller_once_deploys_from_mlflow_tracking_uri(
    mlflow_server: str, deployable: RegisteredModel, tmp_path: Path
) -> None:
    done = modelloop(
        "controller", "--once", "--bindings", str(_bindings(tmp_path)),
        env=mlflow_env(tmp_path, MLFLOW_TRACKING_URI=mlflow_server, MODELLOOP_PREDICTION_LOG_URL="none"),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "env: created", (done.stdout, done.stderr)


def test_webhook_register_writes_to_mlflow_tracking_uri(mlflow_server: str, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("env-secret\n")
    done = modelloop(
        "webhook", "register", "--url", "http://127.0.0.1:9/webhook", "--secret-file", str(secret),
        "--name", "mlflow-env-test", env=mlflow_env(tmp_path, MLFLOW_TRACKING_URI=mlflow_server),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    client = MlflowClient(mlflow_server)
    hooks = [w for w in client.list_webhooks() if w.name == "mlflow-env-test"]
    try:
        assert len(hooks) == 1 and hooks[0].url == "http://127.0.0.1:9/webhook"
    finally:
        for hook in hooks:
            client.delete_webhook(hook.webhook_id)


def test_modelloop_tracking_uri_overrides_mlflow_tracking_uri(mlflow_server: str, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("env-secret\n")
    nowhere = "http://127.0.0.1:9"  # discard port: nothing answers
    done = modelloop(
        "webhook", "register", "--url", "http://127.0.0.1:9/webhook", "--secret-file", str(secret),
        "--name", "mlflow-env-override",
        env=mlflow_env(tmp_path, MLFLOW_TRACKING_URI=mlflow_server, MODELLOOP_TRACKING_URI=nowhere),
    )  # fmt: skip
    assert done.returncode != 0
    assert not [w for w in MlflowClient(mlflow_server).list_webhooks() if w.name == "mlflow-env-override"]
    flagged = modelloop(
        "webhook", "register", "--url", "http://127.0.0.1:9/webhook", "--secret-file", str(secret),
        "--name", "mlflow-env-override", "--tracking-uri", mlflow_server,
        env=mlflow_env(tmp_path, MLFLOW_TRACKING_URI=nowhere, MODELLOOP_TRACKING_URI=nowhere),
    )  # fmt: skip
    assert flagged.returncode == 0, flagged.stderr
    client = MlflowClient(mlflow_server)
    for hook in [w for w in client.list_webhooks() if w.name == "mlflow-env-override"]:
        client.delete_webhook(hook.webhook_id)


# credentials -----------------------------------------------------------------------------------------------


class AuthProxy:
    """A reverse proxy in front of the MLflow server that answers 401 unless a call carries one of the
    accepted `Authorization` headers (what MLflow's client sends for its credential variables)."""

    def __init__(self, upstream: str, accepted: set[str]) -> None:
        target = urlsplit(upstream)
        self.accepted = accepted
        self.allowed = 0
        self.refused = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _forward(self) -> None:
                if self.headers.get("Authorization") not in proxy.accepted:
                    proxy.refused += 1
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="mlflow"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                proxy.allowed += 1
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower() not in ("host", "authorization", "connection")
                }
                conn = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
                try:
                    conn.request(self.command, self.path, body=body or None, headers=headers)
                    response = conn.getresponse()
                    payload = response.read()
                finally:
                    conn.close()
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def auth_proxy(mlflow_server: str) -> Iterator[AuthProxy]:
    basic = "Basic " + base64.b64encode(b"env-user:env-pass").decode()
    proxy = AuthProxy(mlflow_server, {basic, "Bearer env-token"})
    yield proxy
    proxy.close()


@pytest.mark.parametrize(
    "credentials",
    [
        {"MLFLOW_TRACKING_USERNAME": "env-user", "MLFLOW_TRACKING_PASSWORD": "env-pass"},
        {"MLFLOW_TRACKING_TOKEN": "env-token"},
    ],
    ids=["username-password", "token"],
)
def test_controller_and_its_scoring_server_send_mlflow_credentials(
    auth_proxy: AuthProxy, deployable: RegisteredModel, tmp_path: Path, credentials: dict[str, str]
) -> None:
    """The controller resolves the alias through the proxy, and the `modelloop serve` it starts downloads the
    model through it: both only with the credentials from the environment."""
    env = mlflow_env(tmp_path, MLFLOW_TRACKING_URI=auth_proxy.url, MODELLOOP_PREDICTION_LOG_URL="none")
    refused = modelloop("controller", "--once", "--bindings", str(_bindings(tmp_path)), env=env)
    assert refused.stdout.strip() != "env: created" and auth_proxy.refused > 0
    auth_proxy.refused = 0
    done = modelloop(
        "controller", "--once", "--bindings", str(_bindings(tmp_path)), env={**env, **credentials}
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "env: created", (done.stdout, done.stderr)
    assert auth_proxy.refused == 0 and auth_proxy.allowed > 0
