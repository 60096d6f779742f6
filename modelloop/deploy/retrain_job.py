"""Retraining as a Kubernetes Job: `monitoring.retrain.Retrainer` over the official Kubernetes client.

`modelloop monitor` wires `KubernetesJobRetrainer` (through `cluster_retrainer`) when the settings name a Job
template (`MODELLOOP_RETRAIN_JOB_TEMPLATE`, the Helm chart's `<fullname>-retrain-job` ConfigMap, key
`job.yaml`); otherwise it uses `modelloop.monitoring.retrain.SubprocessRetrainer`.

`launch(request)` makes three calls and returns without waiting for the training:
1. creates a ConfigMap `<generateName><model>-<run id[:8]>` holding `request.config_text` (key `config.yaml`);
2. creates the Job from a deep copy of the template (its `generateName` kept): the training container's
   `--config` points at that ConfigMap mounted at `CONFIG_DIR`, `--triggered-by <monitoring run id>` is
   appended (and `--tracking-uri` when the container has no MLflow tracking env of its own), and labels and
   annotations name the model, version and monitoring run;
3. patches the ConfigMap's `ownerReferences` to the created Job, so the Job's TTL cleanup deletes it too.
The monitoring ServiceAccount needs `create` on `batch/jobs` and `create`, `patch` on `configmaps`.

Kubernetes API refusals and outages become `UnavailableError` naming the step and the cause (the status,
the fields a 422 names); response bodies are never shown, since they may quote the config. A template that
cannot work is a `ConfigError` when the retrainer is built.
"""

from __future__ import annotations

import copy
import json
import logging
import posixpath
import re
from pathlib import Path
from typing import Any

import yaml

from modelloop.contract.errors import ConfigError, UnavailableError
from modelloop.monitoring.retrain import Retrainer, RetrainLaunch, RetrainRequest

from .kubernetes.manifests import MODEL_ANNOTATION, VERSION_ANNOTATION

log = logging.getLogger(__name__)

Manifest = dict[str, Any]

CONFIG_VOLUME = "training-config"
CONFIG_DIR = "/etc/modelloop/training"
CONFIG_KEY = "config.yaml"
CONFIG_PATH = posixpath.join(CONFIG_DIR, CONFIG_KEY)
TRAIN_CONTAINER = "train"

MODEL_LABEL = "modelloop.io/model"
MONITORING_RUN_LABEL = "modelloop.io/monitoring-run"
MONITORING_RUN_ANNOTATION = "modelloop.io/monitoring-run"
TRAINING_RUN_ANNOTATION = "modelloop.io/training-run"
CAUSE_ANNOTATION = "modelloop.io/retrain-cause"

#: Env names that give the training container its tracking server (then no `--tracking-uri` is added).
TRACKING_ENV = frozenset({"MLFLOW_TRACKING_URI", "MODELLOOP_TRACKING_URI"})
REQUEST_TIMEOUT_S = 30.0


def _label_value(text: str) -> str:
    """`text` as a valid label value (at most 63 of [A-Za-z0-9_.-], alphanumeric at both ends)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text)[:63].strip("-_.")


def _dns_part(text: str, limit: int) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower())[:limit].strip("-") or "model"


def _option_removed(args: list[str], flag: str) -> list[str]:
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


def _train_container(pod: Manifest) -> Manifest:
    containers = pod.get("containers")
    if not isinstance(containers, list) or not containers:
        raise ConfigError("retraining Job template: spec.template.spec.containers is empty")
    named = [c for c in containers if isinstance(c, dict) and c.get("name") == TRAIN_CONTAINER]
    if named:
        return named[0]
    if len(containers) == 1 and isinstance(containers[0], dict):
        return containers[0]
    raise ConfigError(
        f"retraining Job template: several containers and none named {TRAIN_CONTAINER!r} (the training one)"
    )


def check_job_template(template: Any) -> Manifest:
    """`template` if it can be launched as a retraining Job, else `ConfigError` naming the field."""
    if not isinstance(template, dict):
        raise ConfigError("retraining Job template: not a YAML mapping")
    if template.get("apiVersion") != "batch/v1" or template.get("kind") != "Job":
        raise ConfigError("retraining Job template: apiVersion/kind must be batch/v1 Job")
    meta = template.get("metadata")
    if (
        not isinstance(meta, dict)
        or not isinstance(meta.get("generateName"), str)
        or not meta["generateName"]
    ):
        raise ConfigError(
            "retraining Job template: metadata.generateName is required (every retraining is a new Job)"
        )
    if "name" in meta:
        raise ConfigError("retraining Job template: metadata.name is not allowed (use generateName)")
    pod = ((template.get("spec") or {}).get("template") or {}).get("spec")
    if not isinstance(pod, dict):
        raise ConfigError("retraining Job template: spec.template.spec is missing")
    container = _train_container(pod)
    if not isinstance(container.get("args", []), list):
        raise ConfigError("retraining Job template: the training container's args must be a list")
    if "ttlSecondsAfterFinished" not in template["spec"]:
        log.warning(
            "the retraining Job template has no spec.ttlSecondsAfterFinished: finished Jobs and their "
            "config ConfigMaps stay until deleted by hand"
        )
    return template


def load_job_template(path: Path) -> Manifest:
    """The Job template in the YAML file `path`; `ConfigError` when it is missing or cannot work."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"retraining Job template {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"retraining Job template {path} cannot be read ({exc.strerror})") from None
    try:
        template = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"retraining Job template {path} is not valid YAML{where}") from None
    return check_job_template(template)


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
    `kubernetes.client.ApiClient`). See the module docstring."""

    def __init__(self, template: Manifest, *, namespace: str, api: Any) -> None:
        from kubernetes.client import BatchV1Api, CoreV1Api

        if not namespace:
            raise ConfigError("retraining namespace is empty (MODELLOOP_RETRAIN_NAMESPACE)")
        self._template = copy.deepcopy(check_job_template(template))
        self._namespace = namespace
        self._core: Any = CoreV1Api(api)
        self._batch: Any = BatchV1Api(api)

    # ----- the objects

    def config_map_name(self, request: RetrainRequest) -> str:
        """`<generateName><model>-<monitoring run id[:8]>`, a valid object name."""
        prefix = _dns_part(self._template["metadata"]["generateName"], 160)
        run = _dns_part(request.monitoring_run_id, 8)
        return f"{prefix}-{_dns_part(request.model_name, 40)}-{run}"

    def _labels(self, request: RetrainRequest) -> dict[str, str]:
        return {
            MODEL_LABEL: _label_value(request.model_name) or "model",
            MONITORING_RUN_LABEL: _label_value(request.monitoring_run_id) or "run",
        }

    @staticmethod
    def _annotations(request: RetrainRequest) -> dict[str, str]:
        return {
            MODEL_ANNOTATION: request.model_name,
            VERSION_ANNOTATION: request.model_version,
            MONITORING_RUN_ANNOTATION: request.monitoring_run_id,
            TRAINING_RUN_ANNOTATION: request.training_run_id,
            CAUSE_ANNOTATION: request.cause,
        }

    def config_map(self, request: RetrainRequest) -> Manifest:
        """The ConfigMap holding the training config (its owner is set once the Job exists)."""
        template_labels = self._template["metadata"].get("labels") or {}
        labels = {k: v for k, v in template_labels.items() if k.startswith("app.kubernetes.io/")}
        return {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": self.config_map_name(request),
                "namespace": self._namespace,
                "labels": {**labels, **self._labels(request)},
                "annotations": self._annotations(request),
            },
            "data": {CONFIG_KEY: request.config_text},
        }

    def job(self, request: RetrainRequest, config_map: str) -> Manifest:
        """The Job for `request`: the template with the config volume, arguments, labels and annotations."""
        job = copy.deepcopy(self._template)
        meta = job["metadata"]
        meta["namespace"] = self._namespace
        meta["labels"] = {**(meta.get("labels") or {}), **self._labels(request)}
        meta["annotations"] = {**(meta.get("annotations") or {}), **self._annotations(request)}
        pod_meta = job["spec"]["template"].setdefault("metadata", {})
        pod_meta["labels"] = {**(pod_meta.get("labels") or {}), **self._labels(request)}
        pod = job["spec"]["template"]["spec"]
        container = _train_container(pod)
        args = [str(a) for a in container.get("args") or []]
        for flag in ("--config", "--triggered-by"):
            args = _option_removed(args, flag)
        args += ["--config", CONFIG_PATH]
        env_names = {e.get("name") for e in container.get("env") or [] if isinstance(e, dict)}
        if not env_names & TRACKING_ENV:
            args = [*_option_removed(args, "--tracking-uri"), "--tracking-uri", request.tracking_uri]
        container["args"] = [*args, "--triggered-by", request.monitoring_run_id]
        mounts = [
            m
            for m in container.get("volumeMounts") or []
            if m.get("name") != CONFIG_VOLUME and m.get("mountPath") != CONFIG_DIR
        ]
        container["volumeMounts"] = [
            *mounts,
            {"name": CONFIG_VOLUME, "mountPath": CONFIG_DIR, "readOnly": True},
        ]
        volumes = [v for v in pod.get("volumes") or [] if v.get("name") != CONFIG_VOLUME]
        pod["volumes"] = [
            *volumes,
            {
                "name": CONFIG_VOLUME,
                "configMap": {"name": config_map, "items": [{"key": CONFIG_KEY, "path": CONFIG_KEY}]},
            },
        ]
        return job

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
        config_map = self.config_map(request)
        cm_name = config_map["metadata"]["name"]
        self._create_config_map(config_map)
        try:
            created = self._call(
                "create the retraining Job",
                "create on jobs (API group batch)",
                self._batch.create_namespaced_job,
                ns,
                self.job(request, cm_name),
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
        owner = {"apiVersion": "batch/v1", "kind": "Job", "name": job_name, "uid": uid}
        try:
            if not job_name or not uid:
                raise UnavailableError("the created Job came back without a name or uid")
            self._call(
                f"set the owner of ConfigMap {cm_name}",
                "patch on configmaps",
                self._core.patch_namespaced_config_map,
                cm_name,
                ns,
                [{"op": "add", "path": "/metadata/ownerReferences", "value": [owner]}],
            )
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


def connect(*, kubeconfig: Path | None = None) -> Any:
    """A `kubernetes.client.ApiClient` with the in-cluster service account, else the kubeconfig
    (`kubeconfig`, default: the client's own, $KUBECONFIG or ~/.kube/config); `ConfigError` when neither."""
    from kubernetes import client, config

    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except config.ConfigException:
        try:
            config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=str(kubeconfig) if kubeconfig else None, client_configuration=configuration
            )
        except (config.ConfigException, OSError):
            raise ConfigError(
                "no Kubernetes credentials for launching retraining Jobs: not running in a cluster and "
                "no usable kubeconfig"
            ) from None
    return client.ApiClient(configuration)


def cluster_retrainer(
    template_path: Path, *, namespace: str | None = None, kubeconfig: Path | None = None
) -> KubernetesJobRetrainer:
    """The retrainer `modelloop monitor` uses on Kubernetes: the template at `template_path`, the Jobs in
    `namespace` (default: the template's `metadata.namespace`), credentials from `connect(kubeconfig=)`."""
    template = load_job_template(template_path)
    ns = namespace or template["metadata"].get("namespace")
    if not ns:
        raise ConfigError(
            "no namespace for retraining Jobs: set MODELLOOP_RETRAIN_NAMESPACE or the template's "
            "metadata.namespace"
        )
    return KubernetesJobRetrainer(template, namespace=str(ns), api=connect(kubeconfig=kubeconfig))


__all__ = [
    "CONFIG_PATH",
    "KubernetesJobRetrainer",
    "check_job_template",
    "cluster_retrainer",
    "connect",
    "load_job_template",
]
