"""The retraining Job's template and the objects made from it: the checks a template must pass, and per
retraining the ConfigMap holding the training config and the Job that runs the training.

Used by `retrain_job.KubernetesJobRetrainer` (which creates these objects) and, through it, by the Helm
chart's agreement tests (`<fullname>-retrain-job` ConfigMap, key `job.yaml`). The Job is a deep copy of the
template (its `generateName` kept): the training container's `--config` points at the ConfigMap mounted at
`CONFIG_DIR`, `--triggered-by <monitoring run id>` is appended (and `--tracking-uri` when the container has no
MLflow tracking env of its own), and labels and annotations name the model, version and monitoring run. A
template that cannot work is a `ConfigError` naming the field.

When the training config asks for `study.workers` > 1 and a tuning Job template is given (the chart's
`tuning-job.yaml`, an Indexed Job of `--tune-and-finish` pods), the Job is made from it instead: completions
and parallelism set to the worker count, and `--set study.name=<model>-<monitoring run id[:8]>` so each
retraining tunes its own study and a re-run of the same retraining finds it finished and registers nothing.
Without a tuning template, the one pod runs the workers as local processes (`study.workers` in the config).
"""

from __future__ import annotations

import copy
import logging
import posixpath
import re
from pathlib import Path
from typing import Any

from modelloop.contract.config_files import read_yaml_mapping
from modelloop.contract.errors import ConfigError
from modelloop.monitoring.retrain import RetrainRequest

from .jobs import MODEL_LABEL, check_job_basics, label_value, option_removed
from .manifests import MODEL_ANNOTATION, VERSION_ANNOTATION, Manifest

log = logging.getLogger(__name__)

CONFIG_VOLUME = "training-config"
CONFIG_DIR = "/etc/modelloop/training"
CONFIG_KEY = "config.yaml"
CONFIG_PATH = posixpath.join(CONFIG_DIR, CONFIG_KEY)
TRAIN_CONTAINER = "train"
#: The tuning Job template's file name, beside the retraining Job template (the chart's ConfigMap key).
TUNING_TEMPLATE_FILE = "tuning-job.yaml"

MONITORING_RUN_LABEL = "modelloop.io/monitoring-run"
MONITORING_RUN_ANNOTATION = "modelloop.io/monitoring-run"
TRAINING_RUN_ANNOTATION = "modelloop.io/training-run"
CAUSE_ANNOTATION = "modelloop.io/retrain-cause"

#: Env names that give the training container its tracking server (then no `--tracking-uri` is added).
TRACKING_ENV = frozenset({"MLFLOW_TRACKING_URI", "MODELLOOP_TRACKING_URI"})


def _dns_part(text: str, limit: int) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower())[:limit].strip("-") or "model"


def _set_removed(args: list[str], keys: tuple[str, ...]) -> list[str]:
    """`args` without the `--set KEY=VALUE` overrides of `keys`."""
    out: list[str] = []
    for arg in args:
        if out and out[-1] == "--set" and arg.split("=", 1)[0] in keys:
            out.pop()
        else:
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
    job = check_job_basics(template, "retraining Job template")
    pod = ((job.get("spec") or {}).get("template") or {}).get("spec")
    if not isinstance(pod, dict):
        raise ConfigError("retraining Job template: spec.template.spec is missing")
    container = _train_container(pod)
    if not isinstance(container.get("args", []), list):
        raise ConfigError("retraining Job template: the training container's args must be a list")
    if "ttlSecondsAfterFinished" not in job["spec"]:
        log.warning(
            "the retraining Job template has no spec.ttlSecondsAfterFinished: finished Jobs and their "
            "config ConfigMaps stay until deleted by hand"
        )
    return job


def check_tuning_template(template: Any) -> Manifest:
    """`template` if it can be launched as a tuning Job (an Indexed retraining Job whose training container
    runs `--tune-and-finish`), else `ConfigError` naming the field."""
    job = check_job_template(template)
    if job["spec"].get("completionMode") != "Indexed":
        raise ConfigError("tuning Job template: spec.completionMode must be Indexed (one worker per index)")
    container = _train_container(job["spec"]["template"]["spec"])
    if "--tune-and-finish" not in [str(a) for a in container.get("args") or []]:
        raise ConfigError("tuning Job template: the training container's args must hold --tune-and-finish")
    return job


def config_workers(config_text: str) -> int:
    """`study.workers` of a training config's text (1 when absent or unreadable: one pod trains)."""
    import yaml

    try:
        data = yaml.safe_load(config_text)
        workers = (data.get("study") or {}).get("workers", 1) if isinstance(data, dict) else 1
        return max(1, int(workers))
    except (yaml.YAMLError, AttributeError, TypeError, ValueError):
        return 1


def load_job_template(path: Path) -> Manifest:
    """The Job template in the YAML file `path`; `ConfigError` when it is missing or cannot work."""
    return check_job_template(read_yaml_mapping(path, what="retraining Job template"))


def load_tuning_template(path: Path) -> Manifest:
    """The tuning Job template in the YAML file `path` (`check_tuning_template`)."""
    return check_tuning_template(read_yaml_mapping(path, what="tuning Job template"))


class RetrainJobTemplate:
    """A checked Job template and the namespace its Jobs go to: makes each retraining's objects."""

    def __init__(self, template: Manifest, *, namespace: str, tuning: Manifest | None = None) -> None:
        if not namespace:
            raise ConfigError("retraining namespace is empty (MODELLOOP_RETRAIN_NAMESPACE)")
        self.template = copy.deepcopy(check_job_template(template))
        self.tuning = None if tuning is None else copy.deepcopy(check_tuning_template(tuning))
        self.namespace = namespace

    def study_name(self, request: RetrainRequest) -> str:
        """The study of one retraining: the model and the monitoring run (a re-run reuses it)."""
        return f"{request.model_name}-{_dns_part(request.monitoring_run_id, 8)}"

    def config_map_name(self, request: RetrainRequest) -> str:
        """`<generateName><model>-<monitoring run id[:8]>`, a valid object name."""
        prefix = _dns_part(self.template["metadata"]["generateName"], 160)
        run = _dns_part(request.monitoring_run_id, 8)
        return f"{prefix}-{_dns_part(request.model_name, 40)}-{run}"

    def _labels(self, request: RetrainRequest) -> dict[str, str]:
        return {
            MODEL_LABEL: label_value(request.model_name) or "model",
            MONITORING_RUN_LABEL: label_value(request.monitoring_run_id) or "run",
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
        template_labels = self.template["metadata"].get("labels") or {}
        labels = {k: v for k, v in template_labels.items() if k.startswith("app.kubernetes.io/")}
        return {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": self.config_map_name(request),
                "namespace": self.namespace,
                "labels": {**labels, **self._labels(request)},
                "annotations": self._annotations(request),
            },
            "data": {CONFIG_KEY: request.config_text},
        }

    def job(self, request: RetrainRequest, config_map: str) -> Manifest:
        """The Job for `request`: the template (the tuning one for several workers) with the config volume,
        arguments, labels and annotations."""
        workers = config_workers(request.config_text)
        tuning = self.tuning is not None and workers > 1
        job = copy.deepcopy(self.tuning if tuning and self.tuning is not None else self.template)
        if tuning:
            job["spec"]["completions"] = workers
            job["spec"]["parallelism"] = workers
        meta = job["metadata"]
        meta["namespace"] = self.namespace
        meta["labels"] = {**(meta.get("labels") or {}), **self._labels(request)}
        meta["annotations"] = {**(meta.get("annotations") or {}), **self._annotations(request)}
        pod_meta = job["spec"]["template"].setdefault("metadata", {})
        pod_meta["labels"] = {**(pod_meta.get("labels") or {}), **self._labels(request)}
        pod = job["spec"]["template"]["spec"]
        container = _train_container(pod)
        args = [str(a) for a in container.get("args") or []]
        for flag in ("--config", "--triggered-by"):
            args = option_removed(args, flag)
        args += ["--config", CONFIG_PATH]
        env_names = {e.get("name") for e in container.get("env") or [] if isinstance(e, dict)}
        if not env_names & TRACKING_ENV:
            args = [*option_removed(args, "--tracking-uri"), "--tracking-uri", request.tracking_uri]
        if tuning:
            args = _set_removed(args, ("study.workers", "study.name"))
            args += ["--set", f"study.workers={workers}", "--set", f"study.name={self.study_name(request)}"]
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


__all__ = [
    "CONFIG_DIR",
    "CONFIG_KEY",
    "CONFIG_PATH",
    "CONFIG_VOLUME",
    "TUNING_TEMPLATE_FILE",
    "RetrainJobTemplate",
    "check_job_template",
    "check_tuning_template",
    "config_workers",
    "load_job_template",
    "load_tuning_template",
]
