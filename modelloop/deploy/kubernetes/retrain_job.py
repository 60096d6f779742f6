"""Retraining as a Kubernetes Job: `monitoring.retrain.Retrainer` over the official Kubernetes client.

`modelloop monitor` wires `KubernetesJobRetrainer` (through `cluster_retrainer`) when the settings name a Job
template (`MODELLOOP_RETRAIN_JOB_TEMPLATE`, the Helm chart's `<fullname>-retrain-job` ConfigMap, key
`job.yaml`); otherwise it uses `modelloop.monitoring.retrain.SubprocessRetrainer`. The objects are made by
`retrain_template`; credentials come from `api.api_client`, as for the controller.

`launch(request)` makes three calls and returns without waiting for the training:
1. creates a ConfigMap `<generateName><model>-<run id[:8]>` holding `request.config_text` (key `config.yaml`);
2. creates the Job from the template (see `retrain_template`), its training container reading that ConfigMap;
3. patches the ConfigMap's `ownerReferences` to the created Job, so the Job's TTL cleanup deletes it too.
The monitoring ServiceAccount needs `create` on `batch/jobs` and `create`, `patch` on `configmaps`. When
the config asks for `study.workers` > 1 and `tuning-job.yaml` lies beside the Job template (the chart renders
both into one ConfigMap), the Job is the Indexed tuning Job made from it (`retrain_template`): the same three
calls, the same grants.

Kubernetes API refusals and outages become `UnavailableError` naming the step and the cause (the status,
the fields a 422 names); response bodies are never shown, since they may quote the config. A template that
cannot work is a `ConfigError` when the retrainer is built.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from modelloop.contract.errors import ConfigError, UnavailableError
from modelloop.monitoring.retrain import Retrainer, RetrainLaunch, RetrainRequest

from .api import api_client
from .manifests import Manifest
from .retrain_template import (
    TUNING_TEMPLATE_FILE,
    RetrainJobTemplate,
    load_job_template,
    load_tuning_template,
)

log = logging.getLogger(__name__)

REQUEST_TIMEOUT_S = 30.0


def _unavailable(what: str, namespace: str, exc: BaseException, *, needs: str) -> UnavailableError:
    """A Kubernetes client failure as a message naming the step and the cause, never the response body;
    `needs` is the RBAC grant the step takes (e.g. "create on configmaps")."""
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
        cause = f"forbidden (403): the monitoring ServiceAccount's Role must allow {needs}"
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


class KubernetesJobRetrainer(Retrainer):
    """Launches each retraining as a Job made from `template` in `namespace`, through `api` (a
    `kubernetes.client.ApiClient`, e.g. from `connect`). See the module docstring."""

    def __init__(
        self, template: Manifest, *, namespace: str, api: Any, tuning: Manifest | None = None
    ) -> None:
        from kubernetes.client import BatchV1Api, CoreV1Api

        self._objects = RetrainJobTemplate(template, namespace=namespace, tuning=tuning)
        self._namespace = namespace
        self._core: Any = CoreV1Api(api)
        self._batch: Any = BatchV1Api(api)

    # ----- the calls

    def _call(self, what: str, needs: str, fn: Any, *args: Any, conflict_ok: bool = False) -> Manifest | None:
        """`fn(*args)` as a plain dict; `UnavailableError` on failure (None on 409 with `conflict_ok`)."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            # the raw response: the object as the API server sent it, no client-side model in between
            out = fn(*args, _request_timeout=REQUEST_TIMEOUT_S, _preload_content=False)
        except ApiException as exc:
            if conflict_ok and exc.status == 409:
                return None
            raise _unavailable(what, self._namespace, exc, needs=needs) from None
        except (HTTPError, OSError) as exc:
            raise _unavailable(what, self._namespace, exc, needs=needs) from None
        try:
            obj = json.loads(out.data)
        except ValueError:
            obj = None
        if not isinstance(obj, dict):
            raise UnavailableError(f"cannot {what}: the Kubernetes API answered with no object")
        return obj

    def _create_config_map(self, body: Manifest) -> None:
        name = body["metadata"]["name"]
        what = f"create ConfigMap {name}"
        created = self._call(
            what,
            "create on configmaps",
            self._core.create_namespaced_config_map,
            self._namespace,
            body,
            conflict_ok=True,
        )
        if created is not None:
            return
        # Left by an earlier launch for the same monitoring run whose Job was not created: reuse it.
        log.info("ConfigMap %s exists (an earlier launch for this run); replacing its content", name)
        patch = [
            {"op": "add", "path": "/metadata/labels", "value": body["metadata"]["labels"]},
            {"op": "add", "path": "/metadata/annotations", "value": body["metadata"]["annotations"]},
            {"op": "add", "path": "/data", "value": body["data"]},
        ]
        self._call(
            f"update ConfigMap {name}",
            "patch on configmaps",
            self._core.patch_namespaced_config_map,
            name,
            self._namespace,
            patch,
        )

    def launch(self, request: RetrainRequest) -> RetrainLaunch:
        ns = self._namespace
        config_map = self._objects.config_map(request)
        cm_name = config_map["metadata"]["name"]
        self._create_config_map(config_map)
        job_name = self._create_job(request, cm_name)
        log.info(
            "retraining of model %s version %s launched as Job %s/%s (config in ConfigMap %s)",
            request.model_name,
            request.model_version,
            ns,
            job_name,
            cm_name,
        )
        return RetrainLaunch(
            description=f"Kubernetes Job {ns}/{job_name} (config in ConfigMap {cm_name})",
            details={"job": job_name, "namespace": ns},
        )

    def _create_job(self, request: RetrainRequest, cm_name: str) -> str:
        """Create the Job reading ConfigMap `cm_name`, then make it the ConfigMap's owner; the Job's name."""
        ns = self._namespace
        try:
            created = self._call(
                "create the retraining Job",
                "create on jobs (API group batch)",
                self._batch.create_namespaced_job,
                ns,
                self._objects.job(request, cm_name),
            )
        except UnavailableError:
            log.warning(
                "model %s: ConfigMap %s/%s was created but its Job was not; it is reused by a retry for "
                "the same monitoring run, else delete it by hand",
                request.model_name,
                ns,
                cm_name,
            )
            raise
        meta = (created or {}).get("metadata") or {}
        job_name, uid = str(meta.get("name") or ""), meta.get("uid")
        try:
            if not job_name or not uid:
                raise UnavailableError("the created Job came back without a name or uid")
            self._set_owner(cm_name, job_name, str(uid))
        except UnavailableError as exc:
            # The training runs anyway; only the clean-up of the ConfigMap is lost.
            log.warning(
                "model %s: retraining Job %s/%s started, but ConfigMap %s keeps no owner and outlives "
                "the Job: %s",
                request.model_name,
                ns,
                job_name,
                cm_name,
                exc,
            )
        return job_name

    def _set_owner(self, cm_name: str, job_name: str, uid: str) -> None:
        owner = {"apiVersion": "batch/v1", "kind": "Job", "name": job_name, "uid": uid}
        self._call(
            f"set the owner of ConfigMap {cm_name}",
            "patch on configmaps",
            self._core.patch_namespaced_config_map,
            cm_name,
            self._namespace,
            [{"op": "add", "path": "/metadata/ownerReferences", "value": [owner]}],
        )


def connect(*, kubeconfig: Path | None = None) -> Any:
    """A `kubernetes.client.ApiClient` with the in-cluster service account, else the kubeconfig
    (`kubeconfig`, default: the client's own, $KUBECONFIG or ~/.kube/config); `ConfigError` when neither."""
    return api_client(kubeconfig=kubeconfig, purpose="launching retraining Jobs")


def cluster_retrainer(
    template_path: Path, *, namespace: str | None = None, kubeconfig: Path | None = None
) -> KubernetesJobRetrainer:
    """The retrainer `modelloop monitor` uses on Kubernetes: the template at `template_path`, the Jobs in
    `namespace` (default: the template's `metadata.namespace`), credentials from `connect(kubeconfig=)`."""
    template = load_job_template(template_path)
    tuning_path = template_path.with_name(TUNING_TEMPLATE_FILE)
    tuning = load_tuning_template(tuning_path) if tuning_path.is_file() else None
    ns = namespace or template["metadata"].get("namespace")
    if not ns:
        raise ConfigError(
            "no namespace for retraining Jobs: set MODELLOOP_RETRAIN_NAMESPACE or the template's "
            "metadata.namespace"
        )
    return KubernetesJobRetrainer(
        template, namespace=str(ns), api=connect(kubeconfig=kubeconfig), tuning=tuning
    )


__all__ = ["KubernetesJobRetrainer", "cluster_retrainer", "connect"]
