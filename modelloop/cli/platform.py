"""The local platform: the whole loop as processes and threads on this machine, under one data directory.

Used by `modelloop up` (runs until Ctrl-C) and `modelloop demo`. It starts, in order:

1. an `mlflow server` (SQLite backend and local artifacts in `<data_dir>/mlflow`, webhooks allowed to
   loopback, the webhook encryption key kept in `<data_dir>/secrets` so it survives restarts);
2. the deployment controller with the `local` target (one supervised `modelloop serve` subprocess per binding)
   and its webhook receiver on loopback (wired by `cli.wiring`, as `modelloop controller` is), registered in
   MLflow (idempotent: re-registering updates the hook);
3. the monitoring schedule: a thread running one monitoring pass every `monitor_interval` seconds;
4. the bindings watcher (`cli.live_bindings`): a binding added to, changed in or removed from the bindings
   file (by hand or with `modelloop bind`) is applied while the platform runs, no restart.

Everything durable lives in the data directory (the MLflow database and artifacts, the prediction log, the
secrets, the scoring servers' logs), so stopping and starting again loses nothing: the controller's first
reconcile deploys what the registry names. `stop()` stops everything it started, children included.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from pydantic import Field

from modelloop.cli.wiring import LocalServing, Reconciling, WiredController, wire_controller
from modelloop.contract.durations import Duration
from modelloop.contract.errors import ConfigError, ModelloopError
from modelloop.contract.settings import CommonSettings

if TYPE_CHECKING:
    from modelloop.cli.live_bindings import BindingsWatcher, LiveController
    from modelloop.deploy.bindings import Binding
    from modelloop.deploy.local import LocalTarget
    from modelloop.deploy.mlflow_server import MlflowServer

log = logging.getLogger(__name__)


class PlatformSettings(CommonSettings):
    """What `modelloop up` reads (prefix `MODELLOOP_`; flags override)."""

    mlflow_port: int = Field(default=5000, ge=0, le=65535, description="MLflow UI/API port (0: any free).")
    webhook_port: int = Field(default=0, ge=0, le=65535, description="Controller webhook port (0: any).")
    bindings_file: Path | None = Field(
        default=None, description="Bindings YAML (watched while running); default `<data_dir>/bindings.yaml`."
    )
    poll_interval: Duration = Field(default=30.0, gt=0, description="Time between full reconciles.")
    rollout_deadline: Duration = Field(default=120.0, gt=0, description="Time a version has to get ready.")
    monitor_interval: Duration = Field(default=300.0, gt=0, description="Time between monitoring passes.")
    monitor_window: Duration = Field(default=900.0, gt=0, description="Length of a monitoring window.")
    monitor_lag: Duration = Field(
        default=5.0, ge=0, description="Time after a window closes before it is measured (log flush)."
    )
    local_shared: bool = Field(
        default=False,
        description="One scoring server for every binding (loads and unloads models) instead of one each.",
    )
    monitor_config: Path | None = Field(
        default=None,
        description="Monitoring rules YAML; default `<data_dir>/monitoring.yaml` when it exists.",
    )

    def watched_bindings_file(self) -> Path:
        """The bindings file the platform reads at start and watches (it need not exist yet)."""
        return self.bindings_file if self.bindings_file is not None else self.data_dir / "bindings.yaml"

    def resolved_bindings_file(self) -> Path | None:
        """The bindings file when there is one."""
        path = self.watched_bindings_file()
        return path if path.exists() else None

    def resolved_monitor_config(self) -> Path | None:
        if self.monitor_config is not None:
            return self.monitor_config
        default = self.data_dir / "monitoring.yaml"
        return default if default.exists() else None


class Monitoring(Protocol):
    """The monitoring the schedule drives (wired by the entry point, e.g. `LocalMonitoring`)."""

    def run_pass(self) -> None:
        """Measure every watched model over its last complete window; may launch a retraining."""

    def close(self) -> None:
        """Stop what the passes started (retraining subprocesses)."""


def _secret_file(path: Path, make: Callable[[], str]) -> str:
    """Read a secret kept in the data directory, creating it (mode 0600) on first use."""
    if path.exists():
        value = path.read_text(encoding="utf-8").strip()
        if not value:
            raise ConfigError(f"secret file {path} is empty; delete it to have a new one generated")
        return value
    path.parent.mkdir(parents=True, exist_ok=True)
    value = make()
    path.touch(mode=0o600)
    path.write_text(value + "\n", encoding="utf-8")
    return value


def _fernet_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


@dataclass(frozen=True)
class Endpoint:
    """A binding as `modelloop up` prints it: its gRPC address and version once served, else what is under
    way (`status`)."""

    binding: str
    model: str
    address: str | None
    version: str | None = None
    status: str = ""


class MonitorSchedule:
    """Runs a monitoring pass every `interval` seconds on a thread; a failing pass is logged, never fatal."""

    def __init__(self, monitoring: Monitoring, *, interval: float) -> None:
        self.monitoring = monitoring
        self.interval = interval
        self.passes = 0
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="monitor-schedule", daemon=True)

    def start(self) -> MonitorSchedule:
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.monitoring.run_pass()
            except ModelloopError as exc:
                self.failures += 1
                log.warning("monitoring pass failed: %s", exc)
            except Exception:
                self.failures += 1
                log.exception("monitoring pass failed")
            else:
                self.passes += 1

    def stop(self, *, timeout: float = 120.0) -> None:
        """Stop after the pass in progress, if any."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=timeout)
        self.monitoring.close()


class LocalPlatform:
    """MLflow server + controller (local target, webhooks) + monitoring schedule; see the module docstring.

    Use as a context manager. `monitor` builds the monitoring from the started platform (its tracking URI and
    prediction log), so that this module does not decide how monitoring runs.
    """

    def __init__(
        self,
        settings: PlatformSettings,
        bindings: Sequence[Binding],
        *,
        monitor: Callable[[LocalPlatform], Monitoring] | None = None,
        webhook_cache_ttl: int = 2,
    ) -> None:
        self.settings = settings
        self.bindings = list(bindings)
        self.data_dir = settings.data_dir.resolve()
        self._make_monitor = monitor
        self._webhook_cache_ttl = webhook_cache_ttl
        self.mlflow: MlflowServer | None = None
        self._wired: WiredController | None = None
        self.target: LocalTarget | None = None
        self.controller: LiveController | None = None
        self.schedule: MonitorSchedule | None = None
        self.watcher: BindingsWatcher | None = None
        self._bindings_lock = threading.Lock()

    # lifecycle --------------------------------------------------------------------------------------------

    @property
    def tracking_uri(self) -> str:
        if self.mlflow is None:
            raise RuntimeError("the platform is not started")
        return self.mlflow.url

    @property
    def prediction_log_url(self) -> str:
        if self.settings.prediction_log_url:
            return self.settings.prediction_log_url
        return f"sqlite:///{self.data_dir / 'predictions.db'}"

    def start(self) -> LocalPlatform:
        from modelloop.cli.live_bindings import LiveController
        from modelloop.deploy.webhook_registration import register_webhook

        self.data_dir.mkdir(parents=True, exist_ok=True)
        secrets_dir = self.data_dir / "secrets"
        encryption_key = _secret_file(secrets_dir / "webhook-encryption.key", _fernet_key)
        webhook_secret = _secret_file(secrets_dir / "webhook.secret", lambda: secrets.token_urlsafe(32))
        try:
            self.mlflow = self._mlflow_server(encryption_key)
            self.mlflow.start()
            self._wired = wire_controller(
                self.bindings,
                tracking_uri=self.mlflow.url,
                reconciling=Reconciling(
                    poll_interval=self.settings.poll_interval,
                    rollout_deadline=self.settings.rollout_deadline,
                    webhook_secret=webhook_secret,
                    webhook_port=self.settings.webhook_port,
                ),
                local=LocalServing(
                    work_dir=self.data_dir / "serving",
                    prediction_log_url=self.prediction_log_url,
                    shared=self.settings.local_shared,
                ),
                live=True,
            )
            assert isinstance(self._wired.controller, LiveController)
            self.target, self.controller = self._wired.local, self._wired.controller
            self.controller.start()
            assert self.controller.webhook is not None
            register_webhook(self.mlflow.url, url=self.controller.webhook.url, secret=webhook_secret)
            if self._make_monitor is not None:
                self.schedule = MonitorSchedule(
                    self._make_monitor(self), interval=self.settings.monitor_interval
                ).start()
            self.watcher = self._bindings_watcher().start()
        except BaseException:
            self.stop()
            raise
        return self

    def _bindings_watcher(self) -> BindingsWatcher:
        """The watcher of the bindings file; what the file holds now counts as applied only when it is what
        the platform was started with."""
        from modelloop.cli.live_bindings import BindingsWatcher, parse_content, read_content

        path = self.settings.watched_bindings_file()
        current = read_content(path)
        try:
            applied = parse_content(path, current) == self.bindings
        except ConfigError:
            applied = False
        return BindingsWatcher(path, self.set_bindings, current=current if applied else None)

    def set_bindings(self, bindings: Sequence[Binding]) -> None:
        """Serve `bindings` from now on (the watcher calls this with each valid new bindings file)."""
        with self._bindings_lock:
            self.bindings = list(bindings)
            if self.controller is None:
                return
            added, changed, removed = self.controller.set_bindings(self.bindings)
        if added or changed or removed:
            parts = [f"{what} {', '.join(names)}" for what, names in
                     (("added", added), ("changed", changed), ("removed", removed)) if names]  # fmt: skip
            log.info("bindings file %s: %s", self.settings.watched_bindings_file(), "; ".join(parts))

    def _mlflow_server(self, encryption_key: str) -> MlflowServer:
        """The MLflow server (not started) on `mlflow_port`, or any free port when that is 0."""
        from modelloop.deploy.mlflow_server import MlflowServer, free_port

        return MlflowServer(
            self.data_dir / "mlflow",
            port=self.settings.mlflow_port or free_port(),
            webhook_secret_key=encryption_key,
            extra_env={"MLFLOW_WEBHOOK_CACHE_TTL": str(self._webhook_cache_ttl)},
        )

    def stop(self) -> None:
        """Stop the watcher, the schedule, the controller, the scoring servers and MLflow, in that order."""
        if self.watcher is not None:
            self.watcher.stop()
            self.watcher = None
        if self.schedule is not None:
            self.schedule.stop()
            self.schedule = None
        if self.controller is not None:
            self.controller.stop()
            self.controller = None
        if self._wired is not None:
            self._wired.close()
            self._wired = None
        self.target = None
        if self.mlflow is not None:
            self.mlflow.stop()
            self.mlflow = None

    def __enter__(self) -> LocalPlatform:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # what it serves ---------------------------------------------------------------------------------------

    def endpoints(self) -> list[Endpoint]:
        """Each binding's gRPC address and version (None while nothing is deployed for it) or status."""
        return [self._endpoint(binding) for binding in list(self.bindings)]

    def _endpoint(self, binding: Binding) -> Endpoint:
        from modelloop.deploy.reconcile import Outcome

        target, name = self.target, binding.name
        if target is not None:
            with contextlib.suppress(KeyError):
                address = target.address(name)
                state = target.get(name)
                version = state.champion_version if state is not None else None
                return Endpoint(name, binding.model, address, version)
            starting = target.starting(name)
            if starting is not None:
                status = f"rolling out {binding.model} v{starting.champion_version} (scoring server starting)"
                return Endpoint(name, binding.model, None, status=status)
        result = self.controller.last_results.get(name) if self.controller is not None else None
        if result is None:
            status = "reading the registry"
        elif result.outcome is Outcome.NOTHING:
            status = f"waiting: alias {binding.alias} of {binding.model} names no version yet"
        elif result.outcome is Outcome.FAILED:
            status = f"rollout failed: {result.reason or 'see the log'}"
        else:
            status = "not served"
        return Endpoint(name, binding.model, None, status=status)

    def deployed_models(self) -> list[str]:
        """The models some binding serves now (what monitoring watches): a model with no version deployed
        yet has no traffic to measure."""
        return sorted({e.model for e in self.endpoints() if e.address is not None})

    def wait_for_endpoint(self, binding: str, *, timeout: float) -> str:
        """The binding's gRPC address once its scoring server is up; `ModelloopError` after `timeout`."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for endpoint in self.endpoints():
                if endpoint.binding == binding and endpoint.address is not None:
                    return endpoint.address
            time.sleep(0.2)
        raise ModelloopError(f"binding {binding} was not deployed within {timeout:.0f}s")


__all__ = ["Endpoint", "LocalPlatform", "MonitorSchedule", "Monitoring", "PlatformSettings"]
