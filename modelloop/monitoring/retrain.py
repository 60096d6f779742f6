"""The retraining port, and its local implementation that runs `modelloop train` as a subprocess.

`monitoring.job` calls `Retrainer.launch` when the trigger fires; the CLI (or the local platform) decides
which implementation to inject: `SubprocessRetrainer` here, a Kubernetes Job retrainer in `deploy` later.

Contract of `Retrainer.launch(request)`:
- starts the retraining and returns without waiting for it to finish (training takes minutes);
- the training must run with the given training config, against the given tracking server, and record
  `request.monitoring_run_id` as the run that triggered it (`--triggered-by`);
- returns a `RetrainLaunch` whose `details` are recorded as tags on the monitoring run;
- raises `UnavailableError` when the retraining cannot be started (nothing is recorded as fired then).
Implementations are called from one thread at a time.
"""

from __future__ import annotations

import abc
import logging
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from modelloop.contract.errors import UnavailableError

log = logging.getLogger(__name__)

#: The training command: `modelloop train` in this interpreter.
DEFAULT_TRAIN_COMMAND: tuple[str, ...] = (sys.executable, "-m", "modelloop", "train")
CONFIG_FILENAME = "training_config.yaml"


@dataclass(frozen=True)
class RetrainRequest:
    """Everything a retraining needs: whose config, against which server, caused by which window."""

    model_name: str
    model_version: str
    training_run_id: str  # the serving version's training run (the config came from there)
    config_text: str  # the resolved training config that run logged
    tracking_uri: str
    monitoring_run_id: str
    cause: str


@dataclass(frozen=True)
class RetrainLaunch:
    """What was started; `details` become `modelloop.retrain.<key>` tags on the monitoring run."""

    description: str
    details: dict[str, str] = field(default_factory=dict)


class Retrainer(abc.ABC):
    """Starts a retraining. See the module docstring for the contract."""

    @abc.abstractmethod
    def launch(self, request: RetrainRequest) -> RetrainLaunch:
        """Start the retraining of `request.model_name` and return at once."""


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)


class SubprocessRetrainer(Retrainer):
    """Runs the training command as a child process: `<command> --config <file> --tracking-uri <uri>
    --triggered-by <monitoring run id>`, with the config written under `work_dir` and the output in a log
    file beside it. `wait` lets a caller (tests, the demo) wait for a launched retraining."""

    def __init__(
        self,
        work_dir: Path,
        *,
        command: Sequence[str] = DEFAULT_TRAIN_COMMAND,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        self._work_dir = work_dir
        self._command = tuple(command)
        self._extra = tuple(extra_args)
        self._env = dict(env) if env is not None else None
        self._children: dict[str, subprocess.Popen[bytes]] = {}

    def argv(self, config_path: Path, request: RetrainRequest) -> list[str]:
        """The command line a request runs."""
        return [
            *self._command,
            "--config",
            str(config_path),
            "--tracking-uri",
            request.tracking_uri,
            "--triggered-by",
            request.monitoring_run_id,
            *self._extra,
        ]

    def launch(self, request: RetrainRequest) -> RetrainLaunch:
        folder = self._work_dir / f"{_safe(request.model_name)}-{_safe(request.monitoring_run_id)}"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            config_path = folder / CONFIG_FILENAME
            config_path.write_text(request.config_text, encoding="utf-8")
            log_path = folder / "train.log"
            argv = self.argv(config_path, request)
            with log_path.open("wb") as out:
                child = subprocess.Popen(
                    argv,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=self._env,
                    start_new_session=True,
                )
        except OSError as exc:
            raise UnavailableError(
                f"cannot start the retraining process ({exc.strerror or type(exc).__name__})"
            ) from None
        self._children[request.monitoring_run_id] = child
        log.info(
            "retraining of model %s version %s launched (pid %d), log %s",
            request.model_name,
            request.model_version,
            child.pid,
            log_path,
        )
        return RetrainLaunch(
            description=f"pid {child.pid}: {' '.join(argv)}",
            details={"pid": str(child.pid), "config": str(config_path), "log": str(log_path)},
        )

    def wait(self, monitoring_run_id: str, timeout: float) -> int:
        """Wait for the retraining launched by `monitoring_run_id`; its exit code."""
        return self._children[monitoring_run_id].wait(timeout=timeout)

    def running(self) -> int:
        """How many launched retrainings are still running (reaping the finished ones)."""
        return sum(1 for child in self._children.values() if child.poll() is None)

    def terminate(self, *, grace: float = 10.0) -> None:
        """Stop every retraining still running (SIGTERM, then SIGKILL after `grace` seconds): the local
        platform calls this when it shuts down, so no training outlives it."""
        for child in self._children.values():
            if child.poll() is None:
                child.terminate()
        for child in self._children.values():
            try:
                child.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


__all__ = [
    "CONFIG_FILENAME",
    "DEFAULT_TRAIN_COMMAND",
    "RetrainLaunch",
    "RetrainRequest",
    "Retrainer",
    "SubprocessRetrainer",
]
