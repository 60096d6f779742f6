"""`deploy.kubernetes.batch_job.launch_batch_job` through the shared `jobs.JobLauncher` and the real
`kubernetes` client against a fake API server on loopback: the Indexed Job it creates (validated against the
1.30 and newest schemas), and a refusal as one clear `UnavailableError` naming the grant, never the body."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from kubernetes.client import ApiClient, Configuration

from modelloop.contract.errors import ConfigError, UnavailableError
from modelloop.deploy.kubernetes.batch_job import BATCH_LABEL, launch_batch_job
from modelloop.deploy.kubernetes.jobs import MODEL_LABEL, check_job_basics

from .fake_kube_http import FakeKubeApiServer

NS = "scoring"
TEMPLATE = {
    "apiVersion": "batch/v1",
    "kind": "Job",
    "metadata": {"generateName": "ml-modelloop-batch-", "namespace": NS},
    "spec": {
        "completionMode": "Indexed",
        "backoffLimit": 3,
        "template": {
            "spec": {
                "restartPolicy": "Never",
                "containers": [
                    {
                        "name": "score",
                        "image": "ghcr.io/x/modelloop:1.0",
                        "command": ["python", "-m", "modelloop"],
                        "args": ["score", "--quiet"],
                    }
                ],
            }
        },
    },
}
ARGS = ["--model", "churn@production", "--input", "/data/in.parquet", "--output", "/data/out"]


@pytest.fixture
def kube() -> Iterator[FakeKubeApiServer]:
    with FakeKubeApiServer() as server:
        yield server


def _launch(kube: FakeKubeApiServer, tmp_path: Path) -> str:
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(TEMPLATE), encoding="utf-8")
    api = ApiClient(Configuration(host=kube.url))
    return launch_batch_job(path, ARGS, batch_id="nightly-1", shards=3, model="churn", api=api)


def test_the_batch_job_is_one_indexed_job_with_a_pod_per_shard(
    kube: FakeKubeApiServer, tmp_path: Path
) -> None:
    described = _launch(kube, tmp_path)
    [job] = kube.of_kind("Job")
    for version in ["1.30.0", kubernetes_validate.latest_version()]:
        kubernetes_validate.validate(job, version, strict=True)
    assert described == f"Kubernetes Job {NS}/{job['metadata']['name']} with 3 shard(s)"
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == 3
    assert job["metadata"]["labels"] == {BATCH_LABEL: "nightly-1", MODEL_LABEL: "churn"}
    [container] = job["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["score", "--quiet", *ARGS]


def test_a_refused_launch_names_the_grant_and_never_the_body(kube: FakeKubeApiServer, tmp_path: Path) -> None:
    kube.refuse("POST", "jobs", 403, message="jobs is forbidden: secret-token-123")
    with pytest.raises(UnavailableError) as caught:
        _launch(kube, tmp_path)
    message = str(caught.value)
    assert message.startswith(f"cannot create the batch Job in namespace {NS}: forbidden (403)")
    assert "must allow create on jobs (API group batch)" in message and "secret-token-123" not in message
    assert "\n" not in message and kube.of_kind("Job") == []


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"kind": "Pod"}, "apiVersion/kind must be batch/v1 Job"),
        ({"metadata": {"name": "fixed"}}, "metadata.generateName is required"),
        ({"metadata": {"generateName": "x-", "name": "fixed"}}, "metadata.name is not allowed"),
    ],
)
def test_every_job_template_is_a_new_job_each_launch(change: dict[str, object], says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        check_job_basics({**TEMPLATE, **change}, "batch Job template")
