"""Registering the new model version with the gate's verdict, and moving an alias when the policy says so.

Called by `training.run` at the very end, after everything else has been recorded. The version is created with
its gate tags in one call; if anything after that fails (waiting for it to be ready, setting the alias), the
version is deleted again (and the registered model, if this call created it), so no half-registered version is
left behind. Registering is idempotent per training: a version already made from the same parent run (its
`run_id`, tagged `modelloop.training_run_id`) is returned instead of a second one (`existing_version`), so a
finishing step started again after it registered (a retried pod) registers nothing more.
"""

from __future__ import annotations

import logging
import time

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from modelloop.adapters import mlflow_errors
from modelloop.contract.errors import ConfigError, UnavailableError
from modelloop.contract.registry import CHALLENGER_ALIAS, PRODUCTION_ALIAS, TAG_TRAINING_RUN

log = logging.getLogger(__name__)


def choose_alias(*, policy: str, configured: str | None, passed: bool, has_production: bool) -> str | None:
    """The alias a new version gets: none (manual, or a failed gate), the configured one, else challenger
    when a production version exists and production otherwise."""
    if policy != "auto" or not passed:
        return None
    if configured:
        return configured
    return CHALLENGER_ALIAS if has_production else PRODUCTION_ALIAS


def _exists(client: MlflowClient, name: str) -> bool:
    try:
        client.get_registered_model(name)
        return True
    except MlflowException as exc:
        if mlflow_errors.is_not_found(exc):
            return False
        raise


def existing_version(client: MlflowClient, name: str, run_id: str) -> str | None:
    """The version of `name` the training with parent run `run_id` registered (the lowest, should there be
    several), or None. Versions whose registration failed do not count."""
    found = [
        int(mv.version)
        for mv in client.search_model_versions(f"run_id = '{run_id}'")
        if mv.name == name
        and (mv.tags or {}).get(TAG_TRAINING_RUN) == run_id
        and mv.status != "FAILED_REGISTRATION"
    ]
    return str(min(found)) if found else None


def register(
    client: MlflowClient,
    name: str,
    *,
    model_uri: str,
    model_id: str | None,
    run_id: str,
    tags: dict[str, str],
    alias: str | None,
    ready_timeout: float = 300.0,
) -> str:
    """Create the version (with tags), wait until it is ready, set `alias`; undo everything on failure. When
    the training of `run_id` already registered a version of `name`, that version is returned and nothing is
    created."""
    existed = _exists(client, name)
    if existed:
        found = existing_version(client, name, run_id)
        if found is not None:
            log.info(
                "%s version %s was registered from run %s already; not registering again", name, found, run_id
            )
            return found
    if not existed:
        try:
            client.create_registered_model(name)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":  # another worker won the race
                raise
            existed = True
    version: str | None = None
    try:
        mv = client.create_model_version(
            name, source=model_uri, run_id=run_id, tags=tags, model_id=model_id, await_creation_for=0
        )
        version = str(mv.version)
        deadline = time.monotonic() + ready_timeout
        while mv.status != "READY":
            if mv.status == "FAILED_REGISTRATION":
                raise UnavailableError(f"MLflow could not register version {version} of {name}")
            if time.monotonic() > deadline:
                raise UnavailableError(
                    f"version {version} of {name} did not become ready in {ready_timeout:g}s"
                )
            time.sleep(0.5)
            mv = client.get_model_version(name, version)
        if alias:
            try:
                client.set_registered_model_alias(name, alias, version)
            except MlflowException as exc:
                if exc.error_code != "INVALID_PARAMETER_VALUE":
                    raise
                raise ConfigError(f"promotion.alias: MLflow refuses the alias {alias!r}") from None
        return version
    except BaseException:
        _undo(client, name, version, delete_model=not existed)
        raise


def _undo(client: MlflowClient, name: str, version: str | None, *, delete_model: bool) -> None:
    try:
        if version is not None:
            client.delete_model_version(name, version)
            log.warning("deleted version %s of %s again: registration did not complete", version, name)
        if delete_model and not client.search_model_versions(f"name = '{name}'"):
            client.delete_registered_model(name)
    except MlflowException:
        log.exception("could not undo the registration of %s version %s", name, version)


__all__ = ["choose_alias", "existing_version", "register"]
