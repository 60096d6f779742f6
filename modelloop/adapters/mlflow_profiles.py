"""Attaching a reference profile (and a gate verdict) to a model version logged outside modelloop.

Called by `modelloop profile` (`modelloop.cli.profile`) once everything has been computed and checked, so a
bad input writes nothing. What it writes is what `modelloop train` leaves for the same version, at the same
names (`modelloop.contract.registry`): on the run that logged the version, the reference profile at
`REFERENCE_PROFILE_PATH` with its summary for people beside it, the training metric and task as params, the
model's and the baseline's metrics on the profiled rows; on the version, the gate's tags and where the profile
came from. Serving, monitoring and the controller then read it through the registry port as they read their
own. Shares the client of an `MlflowModelRegistry`; MLflow's errors become the port's errors.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from modelloop.contract.errors import NotFoundError, clip

from .mlflow_registry import MlflowModelRegistry


@dataclass(frozen=True)
class ProfileAttachment:
    """Everything `attach_profile` writes: files of the run (path -> text), its params, metrics and tags,
    and the version's tags."""

    files: Mapping[str, str]
    params: Mapping[str, str] = field(default_factory=dict)
    metrics: Mapping[str, float] = field(default_factory=dict)
    run_tags: Mapping[str, str] = field(default_factory=dict)
    version_tags: Mapping[str, str] = field(default_factory=dict)


def has_artifact(registry: MlflowModelRegistry, run_id: str, path: str) -> bool:
    """Whether the run holds the artifact file `path` (NotFoundError when the run does not exist)."""
    try:
        registry.read_artifact(run_id, path)
    except NotFoundError:
        registry.run(run_id)  # the run itself missing is an error, not "no artifact"
        return False
    return True


def attach_profile(
    registry: MlflowModelRegistry, model: str, version: str, run_id: str, attachment: ProfileAttachment
) -> None:
    """Write `attachment` to the run `run_id` that logged `model` version `version`, then tag the version.

    Params the run already holds with the same value are not written again; the caller checks that none
    differs (MLflow refuses to change a param). The profile files are written after the params and
    metrics, and the version's tags last: a version carries the tags only once its run holds the profile."""
    from mlflow.entities import Metric, Param, RunTag

    from . import mlflow_errors

    client = registry.client
    existing = registry.run(run_id).params
    params = [Param(k, v) for k, v in attachment.params.items() if existing.get(k) != v]
    now = _now_ms()
    metrics = [Metric(k, float(v), now, 0) for k, v in attachment.metrics.items()]
    tags = [RunTag(k, v) for k, v in attachment.run_tags.items()]
    doing = f"attaching a reference profile to {clip(model)}/{clip(version)}"
    try:
        client.log_batch(run_id, metrics=metrics, params=params, tags=tags)
        for path, text in attachment.files.items():
            client.log_text(run_id, text, path)
    except Exception as exc:
        if mlflow_errors.kind_of(exc) is None:
            raise
        raise mlflow_errors.classify(exc, doing, where=registry.where) from None
    registry.set_version_tags(model, version, dict(attachment.version_tags))


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)


__all__ = ["ProfileAttachment", "attach_profile", "has_artifact"]
