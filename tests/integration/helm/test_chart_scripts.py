"""The two scripts the chart ships in ConfigMaps, taken from the rendered chart and run for real: the
`helm test` check against a real MLflow server and a real gRPC health service (with the bundled server's URL
or an external one's, as the test Pod passes it), and the MLflow auth-config writer read back by MLflow's own
config reader."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from modelloop.deploy.mlflow_server import free_port

from .conftest import CI_VALUES, RELEASE, one, render

TRIAL = next(p for p in CI_VALUES if p.stem == "trial-values")


def _script(tmp_path: Path, config_map: str, key: str) -> Path:
    data = one(render("v3", [TRIAL]), "ConfigMap", config_map)["data"][key]
    path = tmp_path / key
    path.write_text(data, encoding="utf-8")
    return path


def _run(script: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": os.environ.get("PATH", ""), **(env or {})},
        check=False,
    )


@pytest.fixture
def health_server() -> Iterator[tuple[str, health.HealthServicer]]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}", servicer
    finally:
        server.stop(grace=None)


def test_helm_test_script_passes_when_mlflow_and_scoring_are_healthy(
    tmp_path: Path, mlflow_server: str, health_server: tuple[str, health.HealthServicer]
) -> None:
    target, servicer = health_server
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    script = _script(tmp_path, f"{RELEASE}-modelloop-test-script", "helm_test.py")
    done = _run(script, "--mlflow", mlflow_server, "--grpc", target, "--timeout", "10")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines() == [f"mlflow {mlflow_server}: ok", f"scoring {target}: ok"]


def test_helm_test_script_fails_naming_what_is_down(
    tmp_path: Path, mlflow_server: str, health_server: tuple[str, health.HealthServicer]
) -> None:
    target, servicer = health_server
    servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    script = _script(tmp_path, f"{RELEASE}-modelloop-test-script", "helm_test.py")
    done = _run(script, "--mlflow", mlflow_server, "--grpc", target, "--timeout", "5")
    assert done.returncode == 1
    assert f"scoring {target}: status NOT_SERVING" in done.stdout
    assert f"mlflow {mlflow_server}: ok" in done.stdout
    nobody = f"http://127.0.0.1:{free_port()}"
    done = _run(script, "--mlflow", nobody, "--timeout", "5")
    assert done.returncode == 1
    assert done.stdout.startswith(f"mlflow {nobody}: unreachable")


def test_helm_test_pod_checks_an_external_mlflow(tmp_path: Path, mlflow_server: str) -> None:
    """With mlflow.external.url the test Pod checks that server (here a real one on loopback), as given."""
    objects = render("v4", [TRIAL], [f"mlflow.external.url={mlflow_server}", "tests.binding="])
    pod = one(objects, "Pod", f"{RELEASE}-modelloop-test")
    args = [str(a) for a in pod["spec"]["containers"][0]["args"]]
    assert args[args.index("--mlflow") + 1] == mlflow_server
    args[args.index("--grpc") : args.index("--grpc") + 2] = []  # no scoring server in this test
    script = tmp_path / "helm_test.py"
    script.write_text(one(objects, "ConfigMap", f"{RELEASE}-modelloop-test-script")["data"]["helm_test.py"])
    done = _run(script, *args, "--timeout", "10")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines() == [f"mlflow {mlflow_server}: ok"]


def test_auth_config_writer_produces_what_mlflow_reads(tmp_path: Path) -> None:
    from mlflow.server.auth.config import read_auth_config

    script = _script(tmp_path, f"{RELEASE}-modelloop-mlflow-scripts", "mlflow_auth_config.py")
    path = tmp_path / "auth" / "basic_auth.ini"
    path.parent.mkdir()
    uri = "postgresql://modelloop:p%40ss%25word@db.example:5432/mlflow"
    env = {"MLFLOW_AUTH_CONFIG_PATH": str(path), "AUTH_DATABASE_URI": uri, "AUTH_DEFAULT_PERMISSION": "READ"}
    done = _run(script, env=env)
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    old = {k: os.environ.get(k) for k in ("MLFLOW_AUTH_CONFIG_PATH",)}
    os.environ["MLFLOW_AUTH_CONFIG_PATH"] = str(path)
    try:
        config = read_auth_config()
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    assert config.database_uri == uri
    assert config.default_permission == "READ"
    assert config.admin_password is None  # comes from MLFLOW_AUTH_ADMIN_PASSWORD, never from the file
    assert uri not in done.stdout + done.stderr


def test_auth_config_writer_names_a_missing_variable_and_writes_nothing(tmp_path: Path) -> None:
    script = _script(tmp_path, f"{RELEASE}-modelloop-mlflow-scripts", "mlflow_auth_config.py")
    path = tmp_path / "basic_auth.ini"
    done = _run(script, env={"MLFLOW_AUTH_CONFIG_PATH": str(path), "AUTH_DEFAULT_PERMISSION": "READ"})
    assert done.returncode == 2
    assert "AUTH_DATABASE_URI" in done.stderr
    assert not path.exists()
