"""The chart's MLflow pod run for real on loopback: its init container's script and its server container's
exact command, flags and environment (Secrets filled with test values, volumes mapped to temporary
directories) against a real PostgreSQL database. Then the chart's webhook-registration hook Job runs its
command against that server, with the credentials the chart hands it.

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
import sqlalchemy as sa

from deploy.mlflow_server import free_port

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
    name = f"modelloop_chart_{secrets.token_hex(4)}"
    admin = sa.create_engine(postgres_admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield sa.make_url(postgres_admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(
                sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"),
                {"n": name},
            )
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


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


def test_webhook_register_hook_runs_against_the_chart_server(chart_mlflow: Running, tmp_path: Path) -> None:
    job = one(chart_mlflow.objects, "Job", f"{PREFIX}-webhook-register")
    [container] = job["spec"]["template"]["spec"]["containers"]
    secret_file = tmp_path / "secret"
    secret_file.write_text(secrets.token_urlsafe(32), encoding="utf-8")
    args = [str(a) for a in container["args"]]
    args[args.index("--secret-file") + 1] = str(secret_file)
    env = _env(container, chart_mlflow.secrets)
    env["MODELLOOP_TRACKING_URI"] = chart_mlflow.url
    env["MODELLOOP_DATA_DIR"] = str(tmp_path / "data")
    env["PATH"] = f"{BIN}:{os.environ.get('PATH', '')}"
    assert container["command"] == ["python", "-m", "modelloop"]
    run = [sys.executable, "-m", "modelloop", *args]
    done = subprocess.run(run, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    url = f"http://{PREFIX}-controller.{NAMESPACE}.svc:8090/webhook"
    assert url in done.stdout
    # again (every upgrade runs the hook): updated, not duplicated
    again = subprocess.run(run, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert again.returncode == 0, again.stdout + again.stderr
    assert done.stdout.split("(")[1].split(")")[0] == again.stdout.split("(")[1].split(")")[0]
