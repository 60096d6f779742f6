"""The chart's MLflow pod run for real on loopback: its init container's script and its server container's
exact command, flags and environment (Secrets filled with test values, volumes mapped to temporary
directories) against a real PostgreSQL database. Then the chart's webhook-registration Job runs its command
against that server, with the credentials the chart hands it: it fails (so Kubernetes retries it) while no
MLflow answers, and succeeds, idempotently, once one does; rendered for an external MLflow
(mlflow.external.url, mlflow.external.authSecret) it reaches the same server with that Secret's credentials.

Shows that what the chart configures works: basic auth on (no anonymous API access, the generated admin
password accepted), health reachable without auth for the probes, the Service's DNS names accepted as Host
while unknown hosts are refused, webhooks stored under the encryption key.
"""

from __future__ import annotations

import base64
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from modelloop.deploy.mlflow_server import free_port
from tests.conftest import scratch_database

from .conftest import CI_VALUES, NAMESPACE, RELEASE, Manifest, one, render

TRIAL = next(p for p in CI_VALUES if p.stem == "trial-values")
PREFIX = f"{RELEASE}-modelloop"
BIN = Path(sys.executable).parent


@dataclass
class Running:
    url: str
    port: int
    password: str
    objects: list[Manifest]
    secrets: dict[tuple[str, str], str]


def _env(container: dict[str, Any], values: dict[tuple[str, str], str]) -> dict[str, str]:
    env = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = str(item["value"])
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            env[item["name"]] = values[(ref["name"], ref["key"])]
    return env


def _mapped(text: str, mounts: dict[str, Path]) -> str:
    for mount, local in mounts.items():
        if text == mount or text.startswith(mount + "/"):
            return str(local) + text[len(mount) :]
    return text


@pytest.fixture(scope="module")
def database(postgres_admin_url: str) -> Iterator[str]:
    with scratch_database(postgres_admin_url, "modelloop_chart") as url:
        yield url


@pytest.fixture(scope="module")
def chart_mlflow(database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    objects = render("v3", [TRIAL])
    pod = one(objects, "Deployment", f"{PREFIX}-mlflow")["spec"]["template"]["spec"]
    [init], [server] = pod["initContainers"], pod["containers"]
    root = tmp_path_factory.mktemp("chart-mlflow")
    mounts = {}
    for container in (init, server):
        for mount in container["volumeMounts"]:
            mounts[mount["mountPath"]] = root / mount["name"]
            (root / mount["name"]).mkdir(exist_ok=True)
    scripts = one(objects, "ConfigMap", f"{PREFIX}-mlflow-scripts")["data"]
    for name, text in scripts.items():
        (root / "scripts" / name).write_text(text, encoding="utf-8")
    password = secrets.token_urlsafe(24)
    values = {
        (f"{PREFIX}-mlflow-db", "uri"): database,
        (f"{PREFIX}-mlflow-auth", "username"): "admin",
        (f"{PREFIX}-mlflow-auth", "password"): password,
        (f"{PREFIX}-mlflow-keys", "webhook-encryption-key"): base64.urlsafe_b64encode(
            os.urandom(32)
        ).decode(),
        (f"{PREFIX}-mlflow-keys", "flask-secret-key"): secrets.token_urlsafe(32),
    }
    base_env = {"PATH": f"{BIN}:{os.environ.get('PATH', '')}", "OMP_NUM_THREADS": "1"}

    init_env = {k: _mapped(v, mounts) for k, v in _env(init, values).items()}
    command = [sys.executable, _mapped(init["command"][1], mounts)]
    assert init["command"][0] == "python"
    done = subprocess.run(command, env={**base_env, **init_env}, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr

    port = free_port()
    args = [_mapped(str(a), mounts) for a in server["args"]]
    args[args.index("--port") + 1] = str(port)
    args[args.index("--host") + 1] = "127.0.0.1"
    env = {k: _mapped(v, mounts) for k, v in _env(server, values).items()}
    env["HOME"] = str(mounts["/tmp"])
    assert server["command"] == ["mlflow", "server"]
    log = (root / "server.log").open("wb")
    proc = subprocess.Popen(
        [str(BIN / "mlflow"), "server", *args],
        env={**base_env, **env},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300  # a safety net on a busy machine, not a timing assertion
        while True:
            assert proc.poll() is None, (root / "server.log").read_text(errors="replace")[-3000:]
            try:
                with urllib.request.urlopen(url + "/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            assert time.monotonic() < deadline, "the chart's MLflow server did not become healthy"
            time.sleep(0.5)
        yield Running(url, port, password, objects, values)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def _get(url: str, *, host: str | None = None, auth: tuple[str, str] | None = None) -> int:
    request = urllib.request.Request(url)
    if host:
        request.add_header("Host", host)
    if auth:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


SEARCH = "/api/2.0/mlflow/experiments/search?max_results=1"


def test_health_needs_no_credentials_and_the_api_does(chart_mlflow: Running) -> None:
    assert _get(chart_mlflow.url + "/health") == 200
    assert _get(chart_mlflow.url + SEARCH) == 401
    assert _get(chart_mlflow.url + SEARCH, auth=("admin", "password1234")) == 401
    assert _get(chart_mlflow.url + SEARCH, auth=("admin", chart_mlflow.password)) == 200


def test_service_names_are_allowed_hosts_and_others_refused(chart_mlflow: Running) -> None:
    admin = ("admin", chart_mlflow.password)
    for host in (
        f"{PREFIX}-mlflow.{NAMESPACE}.svc:{chart_mlflow.port}".replace(f":{chart_mlflow.port}", ":5000"),
        f"{PREFIX}-mlflow:5000",
        f"localhost:{chart_mlflow.port}",
    ):
        assert _get(chart_mlflow.url + SEARCH, host=host, auth=admin) == 200, host
    assert _get(chart_mlflow.url + SEARCH, host="attacker.example:5000", auth=admin) in {400, 403}


def _register_command(
    job: Manifest, tmp_path: Path, secrets_: dict[tuple[str, str], str]
) -> tuple[list[str], dict[str, str]]:
    """The Job's command and env as the pod would run them (webhook secret file in tmp_path)."""
    [container] = job["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["python", "-m", "modelloop"]
    secret_file = tmp_path / "secret"
    secret_file.write_text(secrets.token_urlsafe(32), encoding="utf-8")
    args = [str(a) for a in container["args"]]
    args[args.index("--secret-file") + 1] = str(secret_file)
    env = _env(container, secrets_)
    env["MODELLOOP_DATA_DIR"] = str(tmp_path / "data")
    env["PATH"] = f"{BIN}:{os.environ.get('PATH', '')}"
    return [sys.executable, "-m", "modelloop", *args], env


def _webhook_id(stdout: str) -> str:
    return stdout.split("(", 1)[1].split(")", 1)[0]


REGISTER = f"{PREFIX}-webhook-register-1"  # named by release revision


def test_webhook_register_job_runs_against_the_chart_server(chart_mlflow: Running, tmp_path: Path) -> None:
    job = one(chart_mlflow.objects, "Job", REGISTER)
    run, env = _register_command(job, tmp_path, chart_mlflow.secrets)
    env["MODELLOOP_TRACKING_URI"] = chart_mlflow.url  # the Service's DNS name, on loopback here
    done = subprocess.run(run, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    url = f"http://{PREFIX}-controller.{NAMESPACE}.svc:8090/webhook"
    assert url in done.stdout
    # again (every upgrade runs a new Job; a restarted pod runs it twice): updated, not duplicated
    again = subprocess.run(run, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert again.returncode == 0, again.stdout + again.stderr
    assert _webhook_id(done.stdout) == _webhook_id(again.stdout)


def test_webhook_register_job_fails_while_mlflow_is_down_so_kubernetes_retries(
    chart_mlflow: Running, tmp_path: Path
) -> None:
    job = one(chart_mlflow.objects, "Job", REGISTER)
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "OnFailure" and job["spec"]["backoffLimit"] > 0
    run, env = _register_command(job, tmp_path, chart_mlflow.secrets)
    nobody = f"http://127.0.0.1:{free_port()}"
    env["MODELLOOP_TRACKING_URI"] = nobody  # nothing listens: MLflow not up yet
    # in the pod MLflow's client retries for minutes before giving up; here it gives up at once
    env["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    done = subprocess.run(run, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode != 0  # the pod's container exits non-zero: the Job restarts it with back-off
    assert nobody in done.stdout + done.stderr
    assert chart_mlflow.password not in done.stdout + done.stderr


def test_webhook_register_job_for_an_external_mlflow_uses_its_credentials_secret(
    chart_mlflow: Running, tmp_path: Path
) -> None:
    """The chart's MLflow server stands in for a managed one: the release renders no MLflow of its own and
    its Job signs in with the credentials of mlflow.external.authSecret."""
    objects = render(
        "v3",
        [TRIAL],
        [f"mlflow.external.url={chart_mlflow.url}/", "mlflow.external.authSecret=managed-mlflow"],
    )
    assert not [o for o in objects if o["metadata"]["labels"]["app.kubernetes.io/component"] == "mlflow"]
    job = one(objects, "Job", REGISTER)
    credentials = {
        ("managed-mlflow", "username"): "admin",
        ("managed-mlflow", "password"): chart_mlflow.password,
    }
    run, env = _register_command(job, tmp_path, credentials)
    assert env["MODELLOOP_TRACKING_URI"] == chart_mlflow.url  # as rendered: no override
    done = subprocess.run(run, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    # without the Secret (mlflow.external.authSecret empty) no credentials are sent: the server refuses
    objects = render("v3", [TRIAL], [f"mlflow.external.url={chart_mlflow.url}"])
    run, env = _register_command(one(objects, "Job", REGISTER), tmp_path, {})
    assert not {n for n in env if n.startswith("MLFLOW_TRACKING_")}
    done = subprocess.run(run, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode != 0
