"""The chart's batch-scoring Indexed Job and its launcher agree. The template the chart renders (real `helm
template`, Helm 3 and 4, batch on) validates against the 1.30 and newest Kubernetes schemas, and
`modelloop score --on-kubernetes` launches it (a parent MLflow run on a real server, the Job on a fake
Kubernetes API server on loopback under the real client): N indexes, each running `modelloop score` with the
command's arguments, the version the alias named at launch, the batch id, the shard count and the parent run,
in the chart's hardened pod."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import mlflow
import pytest
import yaml
from click.testing import CliRunner

from modelloop.cli import cli
from modelloop.contract.errors import ConfigError
from modelloop.deploy.kubernetes.batch_job import BatchJobTemplate, check_batch_template, shard_args
from tests.models import register_reference_model
from tests.unit.deploy.fake_kube_http import FakeKubeApiServer, write_kubeconfig

from .conftest import NAMESPACE, RELEASE, Manifest, by_kind, one, render

VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]
SETS = ["batch.enabled=true", "batch.dataClaimName=scoring-data"]


def _template(helm_major: str, sets: list[str]) -> Manifest:
    cm = one(render(helm_major, sets=sets), "ConfigMap", f"{RELEASE}-modelloop-batch-job")
    template = yaml.safe_load(cm["data"]["job.yaml"])
    assert isinstance(template, dict)
    return template


def test_the_template_is_off_by_default(helm_major: str) -> None:
    names = [o["metadata"]["name"] for o in by_kind(render(helm_major), "ConfigMap")]
    assert f"{RELEASE}-modelloop-batch-job" not in names


@pytest.mark.parametrize("sets", [SETS, ["batch.enabled=true"]])
def test_the_indexed_job_renders_and_validates(helm_major: str, sets: list[str]) -> None:
    template = _template(helm_major, sets)
    check_batch_template(template)
    job = BatchJobTemplate(template, namespace=NAMESPACE).job(
        ["--model", "churn@production", "--input", "/data/in.parquet", "--output", "/data/out"],
        batch_id="nightly",
        shards=4,
        model="churn",
    )
    job["metadata"]["name"] = "ml-modelloop-batch-x"  # what the API server makes of generateName
    for obj in (template, job):
        for version in VERSIONS:
            kubernetes_validate.validate(obj, version, strict=True)
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed" and spec["completions"] == spec["parallelism"] == 4
    assert spec["backoffLimit"] == 6 and spec["ttlSecondsAfterFinished"] == 86400
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["automountServiceAccountToken"] is False
    [score] = pod["containers"]
    assert score["name"] == "score" and score["securityContext"]["readOnlyRootFilesystem"] is True
    assert score["args"][:3] == ["score", "--memory-budget", "1G"]
    assert "MODELLOOP_TRACKING_URI" in {e["name"] for e in score["env"]}
    mounts = {m["mountPath"] for m in score["volumeMounts"]}
    assert ("/data" in mounts) == ("batch.dataClaimName=scoring-data" in sets)


def test_a_template_that_cannot_work_is_refused(helm_major: str) -> None:
    template = _template(helm_major, SETS)
    del template["spec"]["completionMode"]
    with pytest.raises(ConfigError, match="Indexed"):
        check_batch_template(template)


def test_shard_args_drop_the_launchers_flags() -> None:
    argv = ["score", "--model", "m/1", "--on-kubernetes", "--namespace", "x", "--job-template=/t.yaml",
            "--shards", "9", "--input", "/data/a.parquet", "--batch-id", "old"]  # fmt: skip
    assert shard_args(argv, model="m/1", batch_id="b", shards=3, parent_run="p") == [
        "--model", "m/1", "--input", "/data/a.parquet",
        "--batch-id", "b", "--shards", "3", "--parent-run", "p",
    ]  # fmt: skip


def test_score_on_kubernetes_launches_the_chart_job(
    helm_major: str, mlflow_server: str, tmp_path: Path
) -> None:
    model = f"churn-{helm_major}"
    reg = register_reference_model(mlflow_server, model, max_iter=5)
    mlflow.MlflowClient(mlflow_server).set_registered_model_alias(model, "production", reg.version)
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(_template(helm_major, SETS)))
    with FakeKubeApiServer() as kube:
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", kube.url)
        args = ["score", "--model", f"{model}@production", "--input", "/data/in.parquet",
                "--output", "/data/out", "--shards", "3", "--batch-id", f"k8s-{helm_major}",
                "--on-kubernetes", "--job-template", str(path), "--kubeconfig", str(kubeconfig),
                "--tracking-uri", mlflow_server]  # fmt: skip
        done = CliRunner().invoke(cli, args)
        assert done.exit_code == 0, done.output
        [job] = kube.of_kind("Job")
    for version in VERSIONS:
        kubernetes_validate.validate(job, version, strict=True)
    assert job["metadata"]["namespace"] == NAMESPACE
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == 3
    [score] = job["spec"]["template"]["spec"]["containers"]
    parent = score["args"][score["args"].index("--parent-run") + 1]
    # the alias is resolved once at launch: every shard scores with the version it named then
    assert score["args"] == ["score", "--memory-budget", "1G", "--model", f"{model}/{reg.version}",
                             "--input", "/data/in.parquet", "--output", "/data/out",
                             "--batch-id", f"k8s-{helm_major}",
                             "--shards", "3", "--parent-run", parent]  # fmt: skip
    run = mlflow.MlflowClient(mlflow_server).get_run(parent)
    assert run.data.tags["modelloop.batch.shard"] == "parent" and run.info.status == "RUNNING"
    assert f"Kubernetes Job {NAMESPACE}/{job['metadata']['name']} with 3 shard(s)" in done.output
    assert f"scoring {model} version {reg.version}" in done.output


def test_score_on_kubernetes_refuses_an_unknown_alias_before_launching(
    mlflow_server: str, tmp_path: Path, helm_major: str
) -> None:
    model = f"churn-unaliased-{helm_major}"
    register_reference_model(mlflow_server, model, max_iter=5)
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(_template(helm_major, SETS)))
    with FakeKubeApiServer() as kube:
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", kube.url)
        args = ["score", "--model", f"{model}@production", "--input", "/data/in.parquet",
                "--output", "/data/out", "--shards", "2", "--on-kubernetes", "--job-template", str(path),
                "--kubeconfig", str(kubeconfig), "--tracking-uri", mlflow_server]  # fmt: skip
        done = CliRunner().invoke(cli, args)
        assert kube.of_kind("Job") == []
    assert done.exit_code != 0
    assert f"model {model} has no version with alias production" in done.output
