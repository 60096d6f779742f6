"""Batch scoring as a Kubernetes Indexed Job: what `modelloop score --on-kubernetes` launches.

The template is the Helm chart's `<fullname>-batch-job` ConfigMap (key `job.yaml`, `_batch_job.tpl`), read
from a file (`--job-template`, `MODELLOOP_BATCH_JOB_TEMPLATE`). `BatchJobTemplate.job` makes one batch's Job
from it: a deep copy (its `generateName` kept) with `completions = parallelism = shards`, the `score`
container's arguments (the template's, then the command's own: a flag given twice takes the command's
value), and labels and annotations naming the batch and the model. Every index runs `modelloop score
--model NAME/VERSION --shards N` (the launcher resolves an alias once, so all shards score with one version)
with `--shard-index` from `JOB_COMPLETION_INDEX` and writes its own part; a pod the Job retries
(`backoffLimit`) overwrites its part, and a second launch of the same batch id replaces the parts, never
adding to them.

`launch_batch_job` makes one call (create the Job) through `jobs.JobLauncher`, with the same credentials and
error messages as the retraining Jobs (`api.api_client`): whoever launches it needs `create` on `batch/jobs`
in the namespace. A template that cannot work is a `ConfigError` naming the field.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from modelloop.contract.config_files import read_yaml_mapping
from modelloop.contract.errors import ConfigError

from .api import api_client
from .jobs import MODEL_LABEL, JobLauncher, check_job_basics, label_value, option_removed
from .manifests import MODEL_ANNOTATION, Manifest

SCORE_CONTAINER = "score"
BATCH_LABEL = "modelloop.io/batch-id"
SHARDS_ANNOTATION = "modelloop.io/batch-shards"
#: the command's own flags that do not go to the shards (the launcher's: the shards' tracking URI is the
#: chart's MLflow env, the launcher's may be a port-forward), and those it sets for them
LAUNCHER_FLAGS = ("--job-template", "--namespace", "--kubeconfig", "--tracking-uri", "--parallel")
LAUNCHER_SWITCHES = ("--on-kubernetes",)
SET_FOR_SHARDS = ("--batch-id", "--shards", "--shard-index", "--parent-run", "--model")


def _score_container(template: Manifest) -> Manifest:
    pod = ((template.get("spec") or {}).get("template") or {}).get("spec")
    containers = pod.get("containers") if isinstance(pod, dict) else None
    if not isinstance(containers, list):
        raise ConfigError("batch Job template: spec.template.spec.containers is missing")
    named = [c for c in containers if isinstance(c, dict) and c.get("name") == SCORE_CONTAINER]
    if not named:
        raise ConfigError(f"batch Job template: no container named {SCORE_CONTAINER!r}")
    return named[0]


def check_batch_template(template: Any) -> Manifest:
    """`template` if it can be launched as a batch Job, else `ConfigError` naming the field."""
    job = check_job_basics(template, "batch Job template")
    if (job.get("spec") or {}).get("completionMode") != "Indexed":
        raise ConfigError("batch Job template: spec.completionMode must be Indexed (one index per shard)")
    args = _score_container(job).get("args")
    if not isinstance(args, list) or not args or args[0] != "score":
        raise ConfigError("batch Job template: the score container's args must start with `score`")
    return job


def load_batch_template(path: Path) -> Manifest:
    """The batch Job template in the YAML file `path` (the chart's ConfigMap key `job.yaml`)."""
    return check_batch_template(read_yaml_mapping(path, what="batch Job template"))


def shard_args(argv: Sequence[str], *, model: str, batch_id: str, shards: int, parent_run: str) -> list[str]:
    """The arguments every shard runs `modelloop score` with: the command's own (`argv`, after `score`),
    without the launcher's flags, with the model (`NAME/VERSION`, the alias resolved once at launch, so
    every shard scores with the same version even when the alias moves during the batch), the batch id,
    shard count and parent run set."""
    args = list(argv)
    if args and args[0] == "score":
        args = args[1:]
    for flag in (*LAUNCHER_FLAGS, *SET_FOR_SHARDS):
        args = option_removed(args, flag)
    args = [a for a in args if a not in LAUNCHER_SWITCHES]
    return [
        "--model", model, *args, "--batch-id", batch_id, "--shards", str(shards), "--parent-run", parent_run
    ]  # fmt: skip


class BatchJobTemplate:
    """A checked batch Job template and the namespace its Jobs go to: makes each batch's Job."""

    def __init__(self, template: Manifest, *, namespace: str) -> None:
        if not namespace:
            raise ConfigError(
                "no namespace for the batch Job: --namespace or the template's metadata.namespace"
            )
        self.template = copy.deepcopy(check_batch_template(template))
        self.namespace = namespace

    def job(self, args: Sequence[str], *, batch_id: str, shards: int, model: str) -> Manifest:
        """The Indexed Job of one batch (see the module docstring)."""
        job = copy.deepcopy(self.template)
        labels = {BATCH_LABEL: label_value(batch_id) or "batch", MODEL_LABEL: label_value(model) or "model"}
        meta = job["metadata"]
        meta["namespace"] = self.namespace
        meta["labels"] = {**(meta.get("labels") or {}), **labels}
        meta["annotations"] = {
            **(meta.get("annotations") or {}),
            MODEL_ANNOTATION: model,
            SHARDS_ANNOTATION: str(shards),
        }
        spec = job["spec"]
        spec["completions"] = spec["parallelism"] = shards
        pod_meta = spec["template"].setdefault("metadata", {})
        pod_meta["labels"] = {**(pod_meta.get("labels") or {}), **labels}
        container = _score_container(job)
        container["args"] = [str(a) for a in container["args"]] + [str(a) for a in args]
        return job


def launch_batch_job(
    template_path: Path,
    args: Sequence[str],
    *,
    batch_id: str,
    shards: int,
    model: str,
    namespace: str | None = None,
    kubeconfig: Path | None = None,
    api: Any = None,
) -> str:
    """Create the batch's Indexed Job; returns a description (`Kubernetes Job NS/NAME with N shards`)."""
    template = load_batch_template(template_path)
    ns = namespace or str(template["metadata"].get("namespace") or "")
    objects = BatchJobTemplate(template, namespace=ns)
    body = objects.job(args, batch_id=batch_id, shards=shards, model=model)
    client = api if api is not None else api_client(kubeconfig=kubeconfig, purpose="launching batch Jobs")
    name, _ = JobLauncher(client, ns).create_job(body, what="the batch Job")
    return f"Kubernetes Job {ns}/{name} with {shards} shard(s)"


__all__ = [
    "BatchJobTemplate",
    "check_batch_template",
    "launch_batch_job",
    "load_batch_template",
    "shard_args",
]
