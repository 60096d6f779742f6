"""Launching Jobs (and the ConfigMaps they read) from templates: the machinery retraining, tuning and batch
scoring share.

Used by `retrain_job.KubernetesJobRetrainer` (a ConfigMap holding the training config, then the retraining or
tuning Job reading it, then the ConfigMap owned by the Job) and by `batch_job.launch_batch_job` (the batch's
Indexed Job). `JobLauncher` makes the calls through the official client (`api.api_client` credentials) on raw
responses, with a request timeout; `check_job_basics` holds the checks every Job template must pass; the
argument and label helpers are those the templates' objects are built with.

Kubernetes API refusals and outages become `UnavailableError` naming the step and the cause (the status, the
RBAC grant the step needs on a 403, the fields a 422 names); response bodies are never shown, since they may
quote a config. Every launch is a new Job (`generateName`), never an update of an old one.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from modelloop.contract.errors import ConfigError, UnavailableError

from .manifests import Manifest

log = logging.getLogger(__name__)

#: seconds each API call may take
REQUEST_TIMEOUT_S = 30.0
#: label naming the model on every Job modelloop launches (and on its pods)
MODEL_LABEL = "modelloop.io/model"


def label_value(text: str) -> str:
    """`text` as a valid label value (at most 63 of [A-Za-z0-9_.-], alphanumeric at both ends)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text)[:63].strip("-_.")


def option_removed(args: list[str], flag: str) -> list[str]:
    """`args` without `flag VALUE` and `flag=VALUE`."""
    out: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg == flag:
            skip = True
        elif not arg.startswith(flag + "="):
            out.append(arg)
    return out


def check_job_basics(template: Any, what: str) -> Manifest:
    """`template` if it is a batch/v1 Job with `metadata.generateName` and no `metadata.name` (each launch
    is a new Job), else `ConfigError` naming the field; `what` names the template in the message."""
    if not isinstance(template, dict):
        raise ConfigError(f"{what}: not a YAML mapping")
    if template.get("apiVersion") != "batch/v1" or template.get("kind") != "Job":
        raise ConfigError(f"{what}: apiVersion/kind must be batch/v1 Job")
    meta = template.get("metadata")
    if (
        not isinstance(meta, dict)
        or not isinstance(meta.get("generateName"), str)
        or not meta["generateName"]
    ):
        raise ConfigError(f"{what}: metadata.generateName is required (every launch is a new Job)")
    if "name" in meta:
        raise ConfigError(f"{what}: metadata.name is not allowed (use generateName)")
    return template


def unavailable(
    what: str, namespace: str, exc: BaseException, *, needs: str, who: str = "the launching identity"
) -> UnavailableError:
    """A Kubernetes client failure as a message naming the step and the cause, never the response body;
    `needs` is the RBAC grant the step takes (e.g. "create on configmaps"), `who` the identity that needs it
    (e.g. "the monitoring ServiceAccount")."""
    from kubernetes.client.exceptions import ApiException

    where = f"cannot {what} in namespace {namespace}"
    if not isinstance(exc, ApiException):
        return UnavailableError(
            f"{where}: Kubernetes API unreachable ({type(exc).__name__})", retry_after=30.0
        )
    status = int(exc.status or 0)
    if status == 401:
        cause = "the Kubernetes API rejected the credentials (401 Unauthorized)"
    elif status == 403:
        cause = f"forbidden (403): {who}'s Role must allow {needs}"
    elif status == 404:
        cause = "not found (404): does the namespace exist?"
    elif status == 409:
        cause = "it already exists (409 Conflict)"
    elif status == 422:
        cause = f"the object is invalid (422){_invalid_fields(exc.body)}"
    elif status == 429 or status >= 500 or status == 0:
        return UnavailableError(f"{where}: Kubernetes API unavailable ({status})", retry_after=30.0)
    else:
        cause = f"refused ({status} {exc.reason or ''})".replace(" )", ")")
    return UnavailableError(f"{where}: {cause}")


def _invalid_fields(body: Any) -> str:
    """`: field (Reason), ...` from a 422 Status body: the field paths and reasons, never the messages."""
    try:
        status = json.loads(body) if isinstance(body, str | bytes) else None
        causes = status["details"]["causes"] if isinstance(status, dict) else []
        named = [
            f"{c['field']} ({c.get('reason', 'invalid')})"
            for c in causes
            if isinstance(c, dict) and isinstance(c.get("field"), str)
        ]
    except (ValueError, KeyError, TypeError):
        named = []
    return f": {', '.join(sorted(set(named)))}" if named else ""


class JobLauncher:
    """Creates Jobs and ConfigMaps in `namespace` through `api` (a `kubernetes.client.ApiClient`); `who`
    names the identity in a 403's message. See the module docstring."""

    def __init__(self, api: Any, namespace: str, *, who: str = "the launching identity") -> None:
        from kubernetes.client import BatchV1Api, CoreV1Api

        self.namespace = namespace
        self.who = who
        self._core: Any = CoreV1Api(api)
        self._batch: Any = BatchV1Api(api)

    def call(self, what: str, needs: str, fn: Any, *args: Any, conflict_ok: bool = False) -> Manifest | None:
        """`fn(*args)` as a plain dict; `UnavailableError` on failure (None on 409 with `conflict_ok`)."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            # the raw response: the object as the API server sent it, no client-side model in between
            out = fn(*args, _request_timeout=REQUEST_TIMEOUT_S, _preload_content=False)
        except ApiException as exc:
            if conflict_ok and exc.status == 409:
                return None
            raise unavailable(what, self.namespace, exc, needs=needs, who=self.who) from None
        except (HTTPError, OSError) as exc:
            raise unavailable(what, self.namespace, exc, needs=needs, who=self.who) from None
        try:
            obj = json.loads(out.data)
        except ValueError:
            obj = None
        if not isinstance(obj, dict):
            raise UnavailableError(f"cannot {what}: the Kubernetes API answered with no object")
        return obj

    def create_config_map(self, body: Manifest) -> None:
        """Create the ConfigMap `body`; one left by an earlier launch (409) gets `body`'s labels, annotations
        and data instead. Needs `create` and `patch` on configmaps."""
        name = body["metadata"]["name"]
        created = self.call(
            f"create ConfigMap {name}",
            "create on configmaps",
            self._core.create_namespaced_config_map,
            self.namespace,
            body,
            conflict_ok=True,
        )
        if created is not None:
            return
        log.info("ConfigMap %s exists (an earlier launch); replacing its content", name)
        patch = [
            {"op": "add", "path": "/metadata/labels", "value": body["metadata"]["labels"]},
            {"op": "add", "path": "/metadata/annotations", "value": body["metadata"]["annotations"]},
            {"op": "add", "path": "/data", "value": body["data"]},
        ]
        self.call(
            f"update ConfigMap {name}",
            "patch on configmaps",
            self._core.patch_namespaced_config_map,
            name,
            self.namespace,
            patch,
        )

    def create_job(self, body: Manifest, *, what: str) -> tuple[str, str]:
        """Create the Job `body` (`what` names it in errors, e.g. "the batch Job"); its (name, uid). Needs
        `create` on jobs (API group batch)."""
        created = self.call(
            f"create {what}",
            "create on jobs (API group batch)",
            self._batch.create_namespaced_job,
            self.namespace,
            body,
        )
        meta = (created or {}).get("metadata") or {}
        name, uid = str(meta.get("name") or ""), str(meta.get("uid") or "")
        if not name or not uid:
            raise UnavailableError(f"cannot create {what}: the created Job came back without a name or uid")
        return name, uid

    def set_owner(self, config_map: str, job_name: str, uid: str) -> None:
        """Make the Job the ConfigMap's owner, so the Job's TTL clean-up deletes it too. Needs `patch` on
        configmaps."""
        owner = {"apiVersion": "batch/v1", "kind": "Job", "name": job_name, "uid": uid}
        self.call(
            f"set the owner of ConfigMap {config_map}",
            "patch on configmaps",
            self._core.patch_namespaced_config_map,
            config_map,
            self.namespace,
            [{"op": "add", "path": "/metadata/ownerReferences", "value": [owner]}],
        )


__all__ = [
    "MODEL_LABEL",
    "REQUEST_TIMEOUT_S",
    "JobLauncher",
    "check_job_basics",
    "label_value",
    "option_removed",
    "unavailable",
]
