"""Retraining as a Kubernetes Job: `monitoring.retrain.Retrainer` over the official Kubernetes client.

`modelloop monitor` wires `KubernetesJobRetrainer` (through `cluster_retrainer`) when the settings name a Job
template (`MODELLOOP_RETRAIN_JOB_TEMPLATE`, the Helm chart's `<fullname>-retrain-job` ConfigMap, key
`job.yaml`); otherwise it uses `modelloop.monitoring.retrain.SubprocessRetrainer`. The objects are made by
`retrain_template`, the calls by `jobs.JobLauncher` (shared with batch Jobs); credentials come from
`api.api_client`, as for the controller.

`launch(request)` makes three calls and returns without waiting for the training:
1. creates a ConfigMap `<generateName><model>-<run id[:8]>` holding `request.config_text` (key `config.yaml`);
2. creates the Job from the template (see `retrain_template`), its training container reading that ConfigMap;
3. patches the ConfigMap's `ownerReferences` to the created Job, so the Job's TTL cleanup deletes it too.
The monitoring ServiceAccount needs `create` on `batch/jobs` and `create`, `patch` on `configmaps`. When
the config asks for `study.workers` > 1 and `tuning-job.yaml` lies beside the Job template (the chart renders
both into one ConfigMap), the Job is the Indexed tuning Job made from it (`retrain_template`): the same three
calls, the same grants.

Kubernetes API refusals and outages become `UnavailableError` naming the step and the cause (`jobs`); response
bodies are never shown, since they may quote the config. A template that cannot work is a `ConfigError` when
the retrainer is built.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from modelloop.contract.errors import ConfigError, UnavailableError
from modelloop.monitoring.retrain import Retrainer, RetrainLaunch, RetrainRequest

from .api import api_client
from .jobs import JobLauncher
from .manifests import Manifest
from .retrain_template import (
    TUNING_TEMPLATE_FILE,
    RetrainJobTemplate,
    load_job_template,
    load_tuning_template,
)

log = logging.getLogger(__name__)


class KubernetesJobRetrainer(Retrainer):
    """Launches each retraining as a Job made from `template` in `namespace`, through `api` (a
    `kubernetes.client.ApiClient`, e.g. from `connect`). See the module docstring."""

    def __init__(
        self, template: Manifest, *, namespace: str, api: Any, tuning: Manifest | None = None
    ) -> None:
        self._objects = RetrainJobTemplate(template, namespace=namespace, tuning=tuning)
        self._namespace = namespace
        self._jobs = JobLauncher(api, namespace, who="the monitoring ServiceAccount")

    def launch(self, request: RetrainRequest) -> RetrainLaunch:
        ns = self._namespace
        config_map = self._objects.config_map(request)
        cm_name = config_map["metadata"]["name"]
        self._jobs.create_config_map(config_map)
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
            job_name, uid = self._jobs.create_job(
                self._objects.job(request, cm_name), what="the retraining Job"
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
        try:
            self._jobs.set_owner(cm_name, job_name, uid)
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
