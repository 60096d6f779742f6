"""What a served model version was trained against, read from the model registry: the reference profile, the
training metric and test metrics of its training run, and the resolved training config a retraining reuses.

Called by `monitoring.job` (the reference a window is compared with) and `monitoring.firing` (the config a
retraining is handed). Reads go through the `ModelRegistry` port, at the paths `modelloop.contract.registry`
names.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from modelloop.contract.errors import InvalidInputError, NotFoundError
from modelloop.contract.model_registry import ModelRegistry, RunInfo
from modelloop.contract.profile import ReferenceProfile
from modelloop.contract.registry import PARAM_METRIC, PARAM_TASK, RESOLVED_CONFIG_PATH, TEST_METRIC_PREFIX

log = logging.getLogger(__name__)


class MissingProfileError(NotFoundError):
    """The version is registered but has no readable reference profile (logged outside modelloop and not
    profiled, registered without a run, or a profile that does not match the schema): drift cannot be
    measured. The message says which."""


@dataclass(frozen=True)
class Reference:
    """A model version's training-time facts that monitoring compares against."""

    model_name: str
    version: str
    training_run_id: str
    profile: ReferenceProfile
    metric: str | None  # the training metric (e.g. "roc_auc")
    test_metrics: dict[str, float]  # "accuracy" -> value on the test set


def read_reference(registry: ModelRegistry, model_name: str, version: str) -> Reference:
    """The version's training run facts and reference profile; `NotFoundError` when the version is not
    registered, `MissingProfileError` when it has no run or no readable profile."""
    run = _training_run(registry, model_name, version)
    try:
        profile = registry.reference_profile(model_name, version)
    except (NotFoundError, InvalidInputError) as exc:
        raise MissingProfileError(
            f"model {model_name} version {version} has no reference profile ({exc})"
        ) from None
    if run.params.get(PARAM_TASK) not in {None, profile.task}:
        log.warning("model %s version %s: training task and profile task differ", model_name, version)
    return Reference(
        model_name=model_name,
        version=version,
        training_run_id=run.run_id,
        profile=profile,
        metric=run.params.get(PARAM_METRIC),
        test_metrics={
            k.removeprefix(TEST_METRIC_PREFIX): float(v)
            for k, v in run.metrics.items()
            if k.startswith(TEST_METRIC_PREFIX)
        },
    )


def training_config(registry: ModelRegistry, reference: Reference) -> str:
    """The resolved training config the version's training run logged."""
    return registry.read_artifact(reference.training_run_id, RESOLVED_CONFIG_PATH).decode("utf-8")


def _training_run(registry: ModelRegistry, model_name: str, version: str) -> RunInfo:
    try:
        info = registry.version(model_name, version)
        run = registry.run(info.run_id) if info.run_id else None
    except NotFoundError:
        raise NotFoundError(f"model {model_name!r} version {version} is not registered") from None
    if run is None:
        raise MissingProfileError(
            f"model {model_name!r} version {version} was registered without a run (no reference profile)"
        )
    return run


__all__ = ["MissingProfileError", "Reference", "read_reference", "training_config"]
