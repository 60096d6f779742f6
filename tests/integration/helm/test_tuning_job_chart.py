"""The chart's tuning Job (`_tuning_job.tpl`, ConfigMap <fullname>-retrain-job key tuning-job.yaml) renders
with real `helm`, validates against the API server's schema, and is what the retraining launcher creates when
the model's config asks for `study.workers` > 1: an Indexed Job, completions = parallelism = the worker count,
each index a `--tune-and-finish` worker on the chart's PostgreSQL study, a study per retraining."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from modelloop.deploy.kubernetes.retrain_job import cluster_retrainer
from modelloop.deploy.kubernetes.retrain_template import CONFIG_PATH, TUNING_TEMPLATE_FILE
from modelloop.monitoring.retrain import RetrainRequest
from tests.unit.deploy.fake_kube_http import FakeKubeApiServer, write_kubeconfig

from .conftest import NAMESPACE, RELEASE, Manifest, one, render
from .test_retrain_job_chart import MINIMAL, RUN_ID, VERSIONS, _template_file

CONFIG_TEXT = "model_name: churn-classifier\ndataset: {name: sklearn:breast_cancer}\nstudy: {workers: 3}\n"


@pytest.fixture
def kube() -> Any:
    with FakeKubeApiServer() as server:
        yield server


def _tuning_template(chart: list[Manifest]) -> Manifest:
    data = one(chart, "ConfigMap", f"{RELEASE}-modelloop-retrain-job")["data"]
    return dict(yaml.safe_load(data[TUNING_TEMPLATE_FILE]))


@pytest.fixture
def chart(helm_major: str) -> list[Manifest]:
    return render(helm_major, sets=[*MINIMAL, "tuning.workers=4"])


def test_the_tuning_job_renders_and_validates(chart: list[Manifest]) -> None:
    job = _tuning_template(chart)
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"] == 4
    assert spec["backoffLimit"] >= 1  # a failed worker pod is retried
    [train] = spec["template"]["spec"]["containers"]
    assert "--tune-and-finish" in train["args"]
    assert "study.storage=$(MODELLOOP_STUDY_STORAGE)" in train["args"]
    env = {e["name"]: e for e in train["env"]}
    assert env["MODELLOOP_STUDY_STORAGE"]["valueFrom"]["secretKeyRef"]["key"] == "url"
    assert spec["template"]["spec"]["automountServiceAccountToken"] is False
    for version in VERSIONS:
        kubernetes_validate.validate(
            {**job, "metadata": {**job["metadata"], "name": "x"}}, version, strict=True
        )


def test_the_launcher_makes_the_tuning_job_for_workers(
    chart: list[Manifest], kube: FakeKubeApiServer, tmp_path: Path
) -> None:
    path, settings = _template_file(chart, tmp_path)
    path.with_name(TUNING_TEMPLATE_FILE).write_text(yaml.safe_dump(_tuning_template(chart)))
    retrainer = cluster_retrainer(
        path, namespace=NAMESPACE, kubeconfig=write_kubeconfig(tmp_path / "kubeconfig", kube.url)
    )
    request = RetrainRequest(
        model_name="churn-classifier",
        model_version="7",
        training_run_id="ab" * 16,
        config_text=CONFIG_TEXT,
        tracking_uri=settings.tracking_uri,
        monitoring_run_id=RUN_ID,
        cause="drift:2026-11-23T10:00",
    )
    retrainer.launch(request)
    [job] = kube.of_kind("Job")
    for version in VERSIONS:
        kubernetes_validate.validate(job, version, strict=True)
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == 3
    [train] = job["spec"]["template"]["spec"]["containers"]
    args = train["args"]
    assert args[0] == "train" and "--tune-and-finish" in args
    assert args[args.index("--config") + 1] == CONFIG_PATH and args.count("--config") == 1
    assert args.count("--set") == 3  # storage, workers, study name: each once
    assert "study.workers=3" in args and f"study.name=churn-classifier-{RUN_ID[:8]}" in args
    assert args[-2:] == ["--triggered-by", RUN_ID]
    # one worker in the config: the single-pod Job, as before
    retrainer.launch(
        replace(request, config_text="model_name: churn-classifier\n", monitoring_run_id="f" * 32)
    )
    single = [j for j in kube.of_kind("Job") if j["metadata"]["name"] != job["metadata"]["name"]]
    assert len(single) == 1 and "completionMode" not in single[0]["spec"]
