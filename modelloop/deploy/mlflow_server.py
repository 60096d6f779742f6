"""A real `mlflow server` process for the local platform and the tests: SQLite backend and local,
proxied artifacts under one data directory, webhooks allowed to reach loopback receivers.

Used by `modelloop up` / `make demo` and by the test suite's session fixture. Start takes 15-20 s here,
so callers start one and share it.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from modelloop.contract.errors import UnavailableError

log = logging.getLogger(__name__)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on `host` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class MlflowServer:
    """One `mlflow server` subprocess. Use as a context manager, or call `start()` and `stop()`.

    `webhook_secret_key` encrypts stored webhook secrets; it must stay the same across restarts of the same
    data directory (the local platform keeps it in a file there).
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        workers: int = 1,
        webhook_secret_key: str | None = None,
        log_file: Path | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.host = host
        self.port = port or free_port(host)
        self.workers = workers
        self.webhook_secret_key = webhook_secret_key
        self.log_file = log_file or self.data_dir / "mlflow-server.log"
        self.extra_env = dict(extra_env or {})  # e.g. MLFLOW_WEBHOOK_CACHE_TTL for tests and benchmarks
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def backend_store_uri(self) -> str:
        return f"sqlite:///{self.data_dir / 'mlflow.db'}"

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            self.backend_store_uri,
            "--artifacts-destination",
            str(self.data_dir / "artifacts"),
            "--serve-artifacts",
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
        ]

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS="true",
            MLFLOW_WEBHOOK_ALLOWED_SCHEMES="http,https",
            OMP_NUM_THREADS="1",
            # MLflow's job runner (GenAI jobs, trace rollups) starts ~8 Huey processes; modelloop uses none
            MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
        )
        if self.webhook_secret_key:
            env["MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY"] = self.webhook_secret_key
        env.update(self.extra_env)
        env.pop("MLFLOW_TRACKING_URI", None)
        return env

    def start(self, *, timeout: float = 90.0) -> MlflowServer:
        """Start the server and wait until `/health` answers; `UnavailableError` if it does not in time."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "artifacts").mkdir(exist_ok=True)
        log.info("starting mlflow server on %s (data in %s)", self.url, self.data_dir)
        with open(self.log_file, "ab") as out:
            self._proc = subprocess.Popen(
                self.command(),
                env=self.environment(),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.wait_ready(timeout=timeout)
        return self

    def is_healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=2) as resp:  # noqa: S310 - loopback URL
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self, *, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise UnavailableError(
                    f"mlflow server exited with code {self._proc.returncode}; see {self.log_file}"
                )
            if self.is_healthy():
                log.info("mlflow server ready at %s", self.url)
                return
            time.sleep(0.25)
        raise UnavailableError(
            f"mlflow server did not become ready within {timeout:.0f}s; see {self.log_file}"
        )

    def stop(self, *, grace: float = 10.0) -> None:
        """Stop the server and its workers (the whole process group)."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, 15)
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
        except ProcessLookupError:
            pass

    def __enter__(self) -> MlflowServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


__all__ = ["MlflowServer", "free_port"]
