"""Every CLI error is one line and an exit code (issue 12): each command, run as a real subprocess, gets the
bad inputs a user would give it (unknown model, alias or version; MLflow unreachable on a closed loopback
port; bad URLs; missing or unreadable files) and must exit non-zero with one short `error:` line naming the
problem as the last line of stderr, and no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest

from modelloop.deploy.mlflow_server import free_port
from tests.models import register_reference_model

MODEL = "cli-errors"
EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
#: most characters of the error line
SHORT = 300
#: most lines of stderr in all (log lines before the error included): no wall of text
MOST_LINES = 20
#: a command told of an unreachable MLflow says so within this many seconds
PROMPT = 30.0


@dataclass(frozen=True)
class Case:
    id: str
    args: tuple[str, ...]  # {mlflow}, {closed}, {model}, {tmp} are filled in
    code: int
    names: str  # the error line must contain this (filled in like args)


SERVE = ("serve", "--port", "0", "--metrics-port", "0")
LOG = "sqlite:///{tmp}/predictions.db"
WINDOW = ("--window", "15m", "--prediction-log-url", LOG)

CASES = [
    # serve
    Case("serve-unknown-model", (*SERVE, "--model", "no-such-model@production", "--tracking-uri", "{mlflow}",
         "--prediction-log-url", "none"), 3, "no-such-model"),
    Case("serve-unknown-model-version", (*SERVE, "--model", "no-such-model/1", "--tracking-uri", "{mlflow}",
         "--prediction-log-url", "none"), 3, "no-such-model"),
    Case("serve-unknown-alias", (*SERVE, "--model", "{model}@no-such-alias", "--tracking-uri", "{mlflow}",
         "--prediction-log-url", "none"), 3, "no-such-alias"),
    Case("serve-unknown-version", (*SERVE, "--model", "{model}/999", "--tracking-uri", "{mlflow}",
         "--prediction-log-url", "none"), 3, "version 999"),
    Case("serve-bad-model-reference", (*SERVE, "--model", "justaname", "--tracking-uri", "{mlflow}"), 2,
         "NAME@ALIAS"),
    Case("serve-unreachable-mlflow", (*SERVE, "--model", "{model}@production", "--tracking-uri",
         "http://127.0.0.1:{closed}", "--prediction-log-url", "none"), 4, "127.0.0.1:{closed} unreachable"),
    Case("serve-bad-tracking-uri", (*SERVE, "--model", "{model}@production", "--tracking-uri", "htp://nowhere",
         "--prediction-log-url", "none"), 2, "htp://nowhere"),
    Case("serve-bad-prediction-log-url", (*SERVE, "--model", "{model}@production", "--tracking-uri",
         "{mlflow}", "--prediction-log-url", "nosuchdb://x"), 2, "prediction log URL"),
    Case("serve-missing-token-file", (*SERVE, "--model", "{model}@production", "--tracking-uri", "{mlflow}",
         "--token-file", "{tmp}/missing-token"), 2, "token_file"),
    Case("serve-missing-tls-key", (*SERVE, "--model", "{model}@production", "--tracking-uri", "{mlflow}",
         "--tls-cert-file", "{tmp}/missing.pem", "--tls-key-file", "{tmp}/missing.key"), 2, "TLS file"),
    # train
    Case("train-missing-config", ("train", "--config", "{tmp}/missing.yaml", "--tracking-uri", "{mlflow}"), 2,
         "missing.yaml"),
    Case("train-config-is-a-folder", ("train", "--config", "{tmp}", "--tracking-uri", "{mlflow}"), 2,
         "training config"),
    Case("train-unreachable-mlflow", ("train", "--config", str(EXAMPLES / "wine.yaml"), "--set",
         "study.n_trials=1", "--tracking-uri", "http://127.0.0.1:{closed}"), 4, "127.0.0.1:{closed}"),
    Case("train-bad-tracking-uri", ("train", "--config", str(EXAMPLES / "wine.yaml"), "--set",
         "study.n_trials=1", "--tracking-uri", "htp://nowhere"), 2, "htp://nowhere"),
    # monitor
    Case("monitor-unknown-model", ("monitor", "--model", "no-such-model", *WINDOW, "--tracking-uri",
         "{mlflow}"), 3, "no-such-model"),
    # monitor's convention: each model that could not be measured gets its line, exit code 1
    Case("monitor-unreachable-mlflow", ("monitor", "--model", "{model}", *WINDOW, "--tracking-uri",
         "http://127.0.0.1:{closed}"), 1, "127.0.0.1:{closed} unreachable"),
    Case("monitor-bad-prediction-log-url", ("monitor", "--model", "{model}", "--window", "15m",
         "--prediction-log-url", "nosuchdb://x", "--tracking-uri", "{mlflow}"), 2, "prediction log URL"),
    Case("monitor-missing-config", ("monitor", "--model", "{model}", *WINDOW, "--tracking-uri", "{mlflow}",
         "--config", "{tmp}/missing.yaml"), 2, "missing.yaml"),
    # controller --once
    Case("controller-missing-bindings", ("controller", "--once", "--bindings", "{tmp}/missing.yaml",
         "--tracking-uri", "{mlflow}"), 2, "missing.yaml"),
    Case("controller-unknown-model", ("controller", "--once", "--bindings", "{tmp}/unknown.yaml",
         "--tracking-uri", "{mlflow}"), 3, "no-such-model"),
    Case("controller-unknown-alias", ("controller", "--once", "--bindings", "{tmp}/no-alias.yaml",
         "--tracking-uri", "{mlflow}"), 3, "no-such-alias"),
    Case("controller-unreachable-mlflow", ("controller", "--once", "--bindings", "{tmp}/known.yaml",
         "--tracking-uri", "http://127.0.0.1:{closed}"), 4, "127.0.0.1:{closed} unreachable"),
    Case("controller-missing-webhook-secret", ("controller", "--once", "--bindings", "{tmp}/known.yaml",
         "--tracking-uri", "{mlflow}", "--webhook-secret-file", "{tmp}/missing-secret"), 2,
         "missing-secret"),
    # webhook register
    Case("webhook-missing-secret", ("webhook", "register", "--url", "http://127.0.0.1:9/webhook",
         "--secret-file", "{tmp}/missing-secret", "--tracking-uri", "{mlflow}"), 2, "missing-secret"),
    Case("webhook-bad-url", ("webhook", "register", "--url", "ftp://nowhere", "--secret-file", "{tmp}/secret",
         "--tracking-uri", "{mlflow}"), 2, "--url"),
    Case("webhook-unreachable-mlflow", ("webhook", "register", "--url", "http://127.0.0.1:9/webhook",
         "--secret-file", "{tmp}/secret", "--tracking-uri", "http://127.0.0.1:{closed}"), 4,
         "127.0.0.1:{closed}"),
    # feedback
    Case("feedback-missing-file", ("feedback", "--file", "{tmp}/missing.csv", "--prediction-log-url", LOG), 2,
         "missing.csv"),
    Case("feedback-bad-prediction-log-url", ("feedback", "--request-id", "r1", "--label", "1",
         "--prediction-log-url", "nosuchdb://x"), 2, "prediction log URL"),
    Case("feedback-unreachable-database", ("feedback", "--request-id", "r1", "--label", "1",
         "--prediction-log-url", "postgresql+psycopg2://someone:hunter2@127.0.0.1:{closed}/db"), 4,
         "unreachable"),
]  # fmt: skip


@pytest.fixture(scope="module")
def registered(mlflow_server: str) -> str:
    version = register_reference_model(mlflow_server, MODEL, max_iter=10).version
    mlflow.MlflowClient(mlflow_server).set_registered_model_alias(MODEL, "production", version)
    return version


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    (tmp_path / "secret").write_text("s3cret\n")
    for name, model, alias in (
        ("known", MODEL, "production"),
        ("unknown", "no-such-model", "production"),
        ("no-alias", MODEL, "no-such-alias"),
    ):
        (tmp_path / f"{name}.yaml").write_text(
            f"bindings:\n  - name: b1\n    model: {model}\n    alias: {alias}\n    target: local\n"
        )
    yield tmp_path


def _environment(tmp: Path) -> dict[str, str]:
    """The test process's environment without MLflow's or modelloop's settings (the flags say it all)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "MODELLOOP_"))}
    return {**env, "MODELLOOP_DATA_DIR": str(tmp / "data"), "OMP_NUM_THREADS": "1"}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gives_one_line_and_an_exit_code(
    case: Case, mlflow_server: str, registered: str, workdir: Path
) -> None:
    fill = {"mlflow": mlflow_server, "closed": str(free_port()), "model": MODEL, "tmp": str(workdir)}
    args = [a.format(**fill) for a in case.args]
    began = time.monotonic()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "modelloop", *args],
            env=_environment(workdir), cwd=workdir, capture_output=True, text=True, timeout=90, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        raise AssertionError(f"{case.id}: still running after 90 s") from None
    took = time.monotonic() - began
    stderr = done.stderr
    assert "Traceback" not in stderr, stderr
    assert done.returncode == case.code, (done.returncode, stderr)
    lines = stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], stderr
    assert case.names.format(**fill) in errors[0], errors[0]
    assert len(errors[0]) <= SHORT, errors[0]
    assert len(lines) <= MOST_LINES, stderr
    assert "hunter2" not in stderr
    if "unreachable" in case.id:
        assert took < PROMPT, took
