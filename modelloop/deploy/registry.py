"""The registry port the controller reads from and writes back to, and its MLflow implementation.

Called by `modelloop.deploy.reconcile`. The port promises:
- `resolve` returns the version an alias names now, falling back to a deprecated stage, or None when neither
  names one (or the model does not exist);
- `set_version_tags` sets tags on one version;
- `record_rollout` logs one run per rollout in `DEPLOYMENTS_EXPERIMENT` with the rollout's timeline (JSON and
  a plot); writing the same record again (a retry after a failure half-way) leaves one run, not two; then
  the stories (descriptions) of the versions it involved are rewritten from the registry;
- every method raises `TemporaryError` when the registry cannot be reached (after a short retry with backoff),
  never a transport exception. Implementations are safe to call from several threads.

`MlflowRegistry` reads and tags versions through `adapters.mlflow_registry.MlflowModelRegistry` and writes the
deployment run through `adapters.mlflow_rollouts.MlflowRolloutRuns`; what the run carries (`deployment_run`:
params, tags, a description, the `rollout.seconds` metric, the timeline's JSON and plot from `rollout_plot`)
is decided here; the versions' stories are rewritten by `adapters.mlflow_version_story`.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from modelloop.adapters import mlflow_rollouts as dep
from modelloop.adapters.mlflow_registry import STAGE_FOR_ALIAS, MlflowModelRegistry
from modelloop.adapters.mlflow_rollouts import DeploymentRun, MlflowRolloutRuns
from modelloop.adapters.mlflow_ui import version_url
from modelloop.adapters.mlflow_version_story import refresh_story
from modelloop.contract.errors import NotFoundError, UnavailableError, clip
from modelloop.contract.model_registry import RegistryRefusedError
from modelloop.contract.registry import (
    TAG_DEPLOY_BINDING,
    TAG_ROLLOUT_REASON,
    TAG_ROLLOUT_RECORD_ID,
    TAG_RUN_KIND,
)
from modelloop.contract.timestamps import iso_utc

from .errors import PermanentError, TemporaryError

log = logging.getLogger(__name__)

T = TypeVar("T")

# what a deployment run carries (besides the params binding, model, from_version, to_version, outcome and
# the metric rollout.seconds)
RUN_TAG_BINDING = TAG_DEPLOY_BINDING
RUN_TAG_REASON = TAG_ROLLOUT_REASON
RUN_TAG_RECORD_ID = TAG_ROLLOUT_RECORD_ID
TIMELINE_JSON_PATH = "modelloop/rollout_timeline.json"
TIMELINE_PLOT_PATH = "modelloop/rollout_timeline.png"


@dataclass(frozen=True)
class RolloutRecord:
    """What happened in one rollout of one binding, written back to the registry."""

    binding: str
    model: str
    from_version: str | None
    to_version: str
    outcome: str  # "serving" | "failed"
    reason: str = ""
    timeline: list[tuple[float, str]] = field(default_factory=list)  # (unix time, event)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)  # makes writing it again idempotent
    target: str = ""  # "local" | "kubernetes"
    address: str = ""  # where the binding answers ("" unknown)

    @property
    def name(self) -> str:
        """The deployment run's name, e.g. "rollout v1 → v2 on demo"."""
        versions = (
            f"v{self.from_version} → v{self.to_version}" if self.from_version else f"v{self.to_version}"
        )
        return f"rollout {versions} on {self.binding}"

    def describe(self) -> str:
        return f"the record of {self.binding}'s rollout of {self.model}/{self.to_version}"


class Registry(ABC):
    """What the controller needs from a model registry (see the module docstring for the contract)."""

    @abstractmethod
    def resolve(self, model: str, *, alias: str, stage: str | None = None) -> str | None:
        """The version `alias` names now; else the newest version in `stage`; else None."""

    @abstractmethod
    def version_tags(self, model: str, version: str) -> dict[str, str]:
        """Tags of one version (empty when it does not exist)."""

    @abstractmethod
    def set_version_tags(self, model: str, version: str, tags: dict[str, str]) -> None:
        """Set tags on one version."""

    @abstractmethod
    def record_rollout(self, record: RolloutRecord) -> None:
        """Log one deployment run with the timeline."""


class MlflowRegistry(Registry):
    """The controller's registry port over MLflow, through `adapters.mlflow_registry.MlflowModelRegistry`.

    MLflow's own HTTP retries are governed by `MLFLOW_HTTP_REQUEST_MAX_RETRIES` / `..._TIMEOUT`, bounded by
    the entry point (`modelloop.cli.errors.MlflowBounds`; MLflow's default waits about 4 minutes); on top,
    each call is tried `attempts` times with exponential backoff, then `TemporaryError`. The model-registry
    port's errors map to the controller's: UnavailableError -> retry, then TemporaryError;
    RegistryRefusedError (and NotFoundError of a write) -> PermanentError.
    """

    def __init__(self, tracking_uri: str, *, attempts: int = 3, backoff: float = 0.5) -> None:
        self.tracking_uri = tracking_uri
        self._registry = MlflowModelRegistry(tracking_uri)
        self._rollouts = MlflowRolloutRuns(self._registry)
        self._attempts = attempts
        self._backoff = backoff

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        delay = self._backoff
        for attempt in range(1, self._attempts + 1):
            try:
                return fn()
            except (RegistryRefusedError, NotFoundError) as exc:
                raise PermanentError(f"registry refused {what}: {exc}") from None
            except UnavailableError as exc:
                log.warning("registry %s failed (%s), attempt %d/%d", what, exc, attempt, self._attempts)
            if attempt < self._attempts:
                time.sleep(delay)
                delay *= 2
        where = self._registry.where
        raise TemporaryError(f"{where} unreachable during {what}", delay=delay)

    def resolve(self, model: str, *, alias: str, stage: str | None = None) -> str | None:
        version = self._call(
            f"resolve {clip(model)}@{clip(alias)}", lambda: self._registry.resolve(model, alias)
        )
        if version is not None or stage is None or STAGE_FOR_ALIAS.get(alias) == stage:
            return version  # a role alias's own stage was already tried by the port
        return self._call(
            f"resolve {clip(model)} stage {clip(stage)}", lambda: self._registry.newest_in_stage(model, stage)
        )

    def version_tags(self, model: str, version: str) -> dict[str, str]:
        def get() -> dict[str, str]:
            try:
                return self._registry.version(model, version).tags
            except NotFoundError:
                return {}

        return self._call(f"read tags of {clip(model)}/{clip(version)}", get)

    def set_version_tags(self, model: str, version: str, tags: dict[str, str]) -> None:
        self._call(
            f"tag {clip(model)}/{clip(version)}",
            lambda: self._registry.set_version_tags(model, version, tags),
        )

    def record_rollout(self, record: RolloutRecord) -> None:
        with tempfile.TemporaryDirectory(prefix="modelloop-rollout-") as folder:
            run = deployment_run(record, Path(folder))
            self._call(f"record rollout of {clip(record.binding)}", lambda: self._rollouts.write(run))
        for version in dict.fromkeys(v for v in (record.to_version, record.from_version) if v):
            self.refresh_story(record.model, version)

    def refresh_story(self, model: str, version: str) -> None:
        """Rewrite the version's description from the registry (`adapters.mlflow_version_story`)."""
        self._call(
            f"describe {clip(model)}/{clip(version)}", lambda: refresh_story(self._registry, model, version)
        )


def deployment_run(record: RolloutRecord, folder: Path) -> DeploymentRun:
    """What the deployment run of `record` carries; the timeline's JSON and plot are written under `folder`
    (at `TIMELINE_JSON_PATH` and `TIMELINE_PLOT_PATH`), which the run's artifacts copy."""
    at = datetime.fromtimestamp(record.timeline[-1][0], UTC) if record.timeline else datetime.now(UTC)
    params = {
        dep.PARAM_BINDING: record.binding,
        dep.PARAM_MODEL: record.model,
        dep.PARAM_FROM_VERSION: record.from_version or "",
        dep.PARAM_TO_VERSION: record.to_version,
        dep.PARAM_OUTCOME: record.outcome,
        dep.PARAM_TARGET: record.target,
        dep.PARAM_ADDRESS: record.address,
        dep.PARAM_AT: iso_utc(at.timestamp()),
    }
    tags = {TAG_RUN_KIND: "deployment", RUN_TAG_BINDING: record.binding}
    if record.reason:
        tags[RUN_TAG_REASON] = record.reason[:4000]
    run = DeploymentRun(
        record_id=record.id,
        name=record.name,
        params=params,
        tags=tags,
        failed=record.outcome != "serving",
        description=rollout_note(record, at=params[dep.PARAM_AT]),
    )
    if not record.timeline:
        return run
    from .rollout_plot import save_timeline_plot  # matplotlib: only once a rollout has a timeline

    start, end = record.timeline[0][0], record.timeline[-1][0]
    events = [{"time": t, "offset_s": round(t - start, 3), "event": e} for t, e in record.timeline]
    json_file, plot_file = folder / TIMELINE_JSON_PATH, folder / TIMELINE_PLOT_PATH
    json_file.parent.mkdir(parents=True, exist_ok=True)
    plot_file.parent.mkdir(parents=True, exist_ok=True)
    json_file.write_text(json.dumps(events), encoding="utf-8")
    save_timeline_plot(
        record.timeline,
        plot_file,
        title=f"{record.binding}: {record.model} v{record.from_version or '-'} -> "
        f"v{record.to_version} ({record.outcome})",
        succeeded=record.outcome == "serving",
    )
    return replace(
        run, metrics={"rollout.seconds": end - start}, metrics_time_ms=int(end * 1000), artifacts=folder
    )


def rollout_note(record: RolloutRecord, *, at: str) -> str:
    """The deployment run's description (markdown): what moved where, and how it ended."""
    model = record.model.replace("|", "/")

    def version(v: str) -> str:
        return f"[version {v}]({version_url(None, record.model, v)})"

    where = f"binding `{record.binding}` ({record.target or 'unknown'} target"
    where += f", `{record.address}`)" if record.address else ")"
    moved = f"{version(record.to_version)} of **{model}** on {where}"
    if record.from_version:
        moved += f", replacing {version(record.from_version)}"
    lines = [f"Rollout of {moved}."]
    if record.timeline:
        lines.append(f"Took {record.timeline[-1][0] - record.timeline[0][0]:.1f} s.")
    if record.outcome == "serving":
        lines.append(f"Serving since {at}.")
    else:
        reason = record.reason.replace("\n", " ")[:500]
        lines.append(f"**Failed** at {at}; the binding kept serving what it served before. Reason: {reason}")
    return "\n\n".join(lines)


__all__ = [
    "RUN_TAG_BINDING",
    "RUN_TAG_REASON",
    "RUN_TAG_RECORD_ID",
    "TIMELINE_JSON_PATH",
    "TIMELINE_PLOT_PATH",
    "MlflowRegistry",
    "Registry",
    "RolloutRecord",
    "deployment_run",
    "rollout_note",
]
