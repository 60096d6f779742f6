"""`deploy.kubernetes.retrain_job.KubernetesJobRetrainer` through the real `kubernetes` client against a fake
API server on loopback: the ConfigMap and Job it creates (validated against the 1.30 and newest schemas), the
owner reference, refusals and outages as clear `UnavailableError`s that never quote the config, template
checks, and `modelloop monitor` choosing it when MODELLOOP_RETRAIN_JOB_TEMPLATE is set."""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from click.testing import CliRunner
from kubernetes.client import ApiClient, Configuration

from modelloop.cli import cli
from modelloop.contract.errors import ConfigError, UnavailableError
from modelloop.deploy.kubernetes.retrain_job import KubernetesJobRetrainer, cluster_retrainer, connect
from modelloop.deploy.kubernetes.retrain_template import (
    CONFIG_PATH,
    check_job_template,
    check_tuning_template,
    config_workers,
    load_job_template,
)
from modelloop.monitoring.retrain import Retrainer, RetrainRequest

from .fake_kube_http import FakeKubeApiServer, write_kubeconfig

NS = "models"
VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]
SECRET_CONFIG = "model_name: churn\ndataset: {kind: sql, url: 'postgresql://u:hunter2@db/x'}\n"
DNS_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

TEMPLATE: dict[str, Any] = {
    "apiVersion": "batch/v1",
    "kind": "Job",
    "metadata": {
        "generateName": "ml-modelloop-retrain-",
        "namespace": NS,
        "labels": {"app.kubernetes.io/name": "modelloop", "app.kubernetes.io/component": "training"},
    },
    "spec": {
        "backoffLimit": 1,
        "ttlSecondsAfterFinished": 3600,
        "template": {
            "metadata": {"labels": {"app.kubernetes.io/name": "modelloop"}},
            "spec": {
                "restartPolicy": "Never",
                "containers": [
                    {
                        "name": "train",
                        "image": "ghcr.io/x/modelloop:1.0",
                        "command": ["python", "-m", "modelloop"],
                        "args": ["train", "--config", "/etc/modelloop/training/config.yaml"],
                        "env": [{"name": "MODELLOOP_TRACKING_URI", "value": "http://mlflow:5000"}],
                        "volumeMounts": [
                            {"name": "training-config", "mountPath": "/etc/modelloop/training"},
                            {"name": "tmp", "mountPath": "/tmp"},
                        ],
                    }
                ],
                "volumes": [
                    {"name": "training-config", "configMap": {"name": "static-config"}},
                    {"name": "tmp", "emptyDir": {}},
                ],
            },
        },
    },
}


def request(run_id: str = "0123456789abcdef0123456789abcdef", model: str = "churn") -> RetrainRequest:
    return RetrainRequest(
        model_name=model,
        model_version="3",
        training_run_id="feedfacefeedfacefeedfacefeedface",
        config_text=SECRET_CONFIG,
        tracking_uri="http://monitor-sees-mlflow:5000",
        monitoring_run_id=run_id,
        cause="drift:2026-11-23T10:00",
    )


@pytest.fixture
def kube() -> Iterator[FakeKubeApiServer]:
    with FakeKubeApiServer() as server:
        yield server


def retrainer(kube: FakeKubeApiServer, template: dict[str, Any] = TEMPLATE) -> KubernetesJobRetrainer:
    return KubernetesJobRetrainer(template, namespace=NS, api=ApiClient(Configuration(host=kube.url)))


def one(kube: FakeKubeApiServer, kind: str) -> dict[str, Any]:
    [obj] = kube.of_kind(kind)
    return obj


def container(job: dict[str, Any]) -> dict[str, Any]:
    [c] = job["spec"]["template"]["spec"]["containers"]
    return dict(c)


def test_launch_creates_the_config_map_and_the_job_and_links_them(kube: FakeKubeApiServer) -> None:
    launcher = retrainer(kube)
    assert isinstance(launcher, Retrainer)
    launch = launcher.launch(request())
    job, cm = one(kube, "Job"), one(kube, "ConfigMap")
    for obj in (job, cm):
        for version in VERSIONS:
            kubernetes_validate.validate(obj, version, strict=True)
    name = job["metadata"]["name"]
    assert name.startswith("ml-modelloop-retrain-") and name != "ml-modelloop-retrain-"
    assert launch.details == {"job": name, "namespace": NS}
    assert name in launch.description and cm["metadata"]["name"] in launch.description
    # the config travels in the ConfigMap, mounted where --config points
    assert cm["metadata"]["name"] == "ml-modelloop-retrain-churn-01234567"
    assert cm["data"] == {"config.yaml": SECRET_CONFIG}
    c = container(job)
    assert c["args"] == ["train", "--config", CONFIG_PATH, "--triggered-by", request().monitoring_run_id]
    mount = next(m for m in c["volumeMounts"] if m["mountPath"] == "/etc/modelloop/training")
    assert f"{mount['mountPath']}/config.yaml" == CONFIG_PATH
    volume = next(v for v in job["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"])
    assert volume["configMap"] == {
        "name": cm["metadata"]["name"],
        "items": [{"key": "config.yaml", "path": "config.yaml"}],
    }
    assert [v["name"] for v in job["spec"]["template"]["spec"]["volumes"]].count(mount["name"]) == 1
    # the owner is the created Job: its TTL clean-up deletes the ConfigMap
    assert cm["metadata"]["ownerReferences"] == [
        {"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": job["metadata"]["uid"]}
    ]
    # labels and annotations name the model, version and monitoring run
    for obj in (job, cm):
        meta = obj["metadata"]
        assert meta["labels"]["modelloop.io/model"] == "churn"
        assert meta["labels"]["modelloop.io/monitoring-run"] == request().monitoring_run_id
        assert meta["labels"]["app.kubernetes.io/component"] == "training"
        assert meta["annotations"]["modelloop.io/model-version"] == "3"
        assert meta["annotations"]["modelloop.io/training-run"] == request().training_run_id
        assert meta["annotations"]["modelloop.io/retrain-cause"] == request().cause
    assert job["spec"]["template"]["metadata"]["labels"]["modelloop.io/model"] == "churn"
    assert job["spec"]["ttlSecondsAfterFinished"] == 3600
    # three calls in order; the patch is a JSON patch (what the real client sends for a list body)
    assert [(m, p.split("?")[0], t) for m, p, t in kube.requests] == [
        ("POST", f"/api/v1/namespaces/{NS}/configmaps", None),
        ("POST", f"/apis/batch/v1/namespaces/{NS}/jobs", None),
        (
            "PATCH",
            f"/api/v1/namespaces/{NS}/configmaps/{cm['metadata']['name']}",
            "application/json-patch+json",
        ),
    ]
    # the template itself is left as it was
    assert TEMPLATE["spec"]["template"]["spec"]["volumes"][0]["configMap"]["name"] == "static-config"


def test_each_launch_is_a_new_job(kube: FakeKubeApiServer) -> None:
    launcher = retrainer(kube)
    first = launcher.launch(request("a" * 32))
    second = launcher.launch(request("b" * 32, model="Fraud Scorer/v2"))
    assert first.details["job"] != second.details["job"]
    names = {cm["metadata"]["name"] for cm in kube.of_kind("ConfigMap")}
    assert names == {"ml-modelloop-retrain-churn-aaaaaaaa", "ml-modelloop-retrain-fraud-scorer-v2-bbbbbbbb"}
    fraud = next(j for j in kube.of_kind("Job") if j["metadata"]["name"] == second.details["job"])
    assert fraud["metadata"]["annotations"]["modelloop.io/model"] == "Fraud Scorer/v2"
    assert fraud["metadata"]["labels"]["modelloop.io/model"] == "Fraud-Scorer-v2"
    for obj in kube.of_kind("Job") + kube.of_kind("ConfigMap"):
        kubernetes_validate.validate(obj, VERSIONS[-1], strict=True)


def test_tracking_uri_is_added_only_without_tracking_env(kube: FakeKubeApiServer) -> None:
    template = copy.deepcopy(TEMPLATE)
    c = template["spec"]["template"]["spec"]["containers"][0]
    c["env"] = [{"name": "OMP_NUM_THREADS", "value": "1"}]
    c["args"] = ["train", "--config=/old.yaml", "--triggered-by", "stale", "--tracking-uri", "http://old"]
    retrainer(kube, template).launch(request())
    args = container(one(kube, "Job"))["args"]
    assert args == [
        "train",
        "--config",
        CONFIG_PATH,
        "--tracking-uri",
        "http://monitor-sees-mlflow:5000",
        "--triggered-by",
        request().monitoring_run_id,
    ]


def test_forbidden_job_names_the_cause_and_a_retry_reuses_the_config_map(kube: FakeKubeApiServer) -> None:
    launcher = retrainer(kube)
    kube.refuse("POST", "jobs", 403, message=f"jobs is forbidden: {SECRET_CONFIG}")
    with pytest.raises(UnavailableError) as caught:
        launcher.launch(request())
    message = str(caught.value)
    assert "create the retraining Job in namespace models" in message and "forbidden (403)" in message
    assert "Role must allow create on jobs (API group batch)" in message and "hunter2" not in message
    assert kube.of_kind("Job") == [] and len(kube.of_kind("ConfigMap")) == 1
    # the monitoring job may try the same run again: the ConfigMap left behind is reused
    launch = launcher.launch(request())
    cm = one(kube, "ConfigMap")
    assert cm["data"] == {"config.yaml": SECRET_CONFIG}
    assert (
        cm["metadata"]["ownerReferences"][0]["name"]
        == launch.details["job"]
        == one(kube, "Job")["metadata"]["name"]
    )
    kubernetes_validate.validate(cm, VERSIONS[0], strict=True)


def test_invalid_object_names_the_fields_not_the_values(kube: FakeKubeApiServer) -> None:
    kube.refuse(
        "POST",
        "configmaps",
        422,
        message=f'ConfigMap is invalid: data: Too long: "{SECRET_CONFIG}"',
        causes=[{"field": "data", "reason": "FieldValueTooLong", "message": SECRET_CONFIG}],
    )
    with pytest.raises(UnavailableError) as caught:
        retrainer(kube).launch(request())
    message = str(caught.value)
    assert "cannot create ConfigMap ml-modelloop-retrain-churn-01234567 in namespace models" in message
    assert "invalid (422): data (FieldValueTooLong)" in message and "hunter2" not in message
    assert kube.of_kind("Job") == []


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (401, "rejected the credentials (401 Unauthorized)"),
        (404, "not found (404): does the namespace exist?"),
        (503, "Kubernetes API unavailable (503)"),
        (400, "refused (400 Bad Request)"),
    ],
)
def test_refusals_map_to_clear_messages(kube: FakeKubeApiServer, code: int, expected: str) -> None:
    kube.refuse("POST", "configmaps", code, message=SECRET_CONFIG)
    with pytest.raises(UnavailableError) as caught:
        retrainer(kube).launch(request())
    assert expected in str(caught.value) and "hunter2" not in str(caught.value)
    assert kube.of_kind("Job") == [] and kube.of_kind("ConfigMap") == []


def test_unreachable_api_is_unavailable() -> None:
    with FakeKubeApiServer() as kube:
        url = kube.url
    config = Configuration(host=url)
    config.retries = 0
    launcher = KubernetesJobRetrainer(TEMPLATE, namespace=NS, api=ApiClient(config))
    with pytest.raises(UnavailableError, match="Kubernetes API unreachable"):
        launcher.launch(request())


def test_a_lost_owner_patch_still_launches(kube: FakeKubeApiServer, caplog: pytest.LogCaptureFixture) -> None:
    kube.refuse("PATCH", "configmaps", 403, message="configmaps is forbidden")
    with caplog.at_level(logging.WARNING, logger="modelloop.deploy.kubernetes.retrain_job"):
        launch = retrainer(kube).launch(request())
    assert launch.details["job"] == one(kube, "Job")["metadata"]["name"]
    assert "ownerReferences" not in one(kube, "ConfigMap")["metadata"]
    assert "ConfigMap ml-modelloop-retrain-churn-01234567 keeps no owner" in caplog.text
    assert "Role must allow patch on configmaps" in caplog.text
    assert "hunter2" not in caplog.text


def _broken(path: list[str | int], value: Any) -> dict[str, Any]:
    template = copy.deepcopy(TEMPLATE)
    target: Any = template
    for key in path[:-1]:
        target = target[key]
    if value is None:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return template


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ([], "not a YAML mapping"),
        (_broken(["kind"], "Pod"), "must be batch/v1 Job"),
        (_broken(["metadata", "generateName"], None), "metadata.generateName is required"),
        (_broken(["metadata", "name"], "fixed"), "metadata.name is not allowed"),
        (_broken(["spec", "template", "spec"], None), "spec.template.spec is missing"),
        (_broken(["spec", "template", "spec", "containers"], []), "containers is empty"),
        (
            _broken(["spec", "template", "spec", "containers"], [{"name": "a"}, {"name": "b"}]),
            "none named 'train'",
        ),
        (_broken(["spec", "template", "spec", "containers", 0, "args"], "train"), "args must be a list"),
    ],
)
def test_template_checks_name_the_field(template: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_job_template(template)


def test_load_job_template_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_job_template(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: Job\nmetadata: [\n")
    with pytest.raises(ConfigError, match=r"not valid YAML \(line \d+\)"):
        load_job_template(bad)
    good = tmp_path / "job.yaml"
    good.write_text(yaml.safe_dump(TEMPLATE))
    assert load_job_template(good) == TEMPLATE


def test_cluster_retrainer_falls_back_to_the_kubeconfig(
    kube: FakeKubeApiServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", kube.url)
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(TEMPLATE))
    launch = cluster_retrainer(path, kubeconfig=kubeconfig).launch(request())  # namespace from the template
    assert launch.details["namespace"] == NS and one(kube, "Job")["metadata"]["namespace"] == NS
    cluster_retrainer(path, namespace="other", kubeconfig=kubeconfig).launch(request())
    assert {j["metadata"]["namespace"] for j in kube.of_kind("Job")} == {NS, "other"}
    path.write_text(yaml.safe_dump(_broken(["metadata", "namespace"], None)))
    with pytest.raises(ConfigError, match="MODELLOOP_RETRAIN_NAMESPACE"):
        cluster_retrainer(path)


def test_connect_without_cluster_or_kubeconfig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(ConfigError, match="not running in a cluster and no usable kubeconfig"):
        connect(kubeconfig=tmp_path / "none")


def test_monitor_cli_uses_the_job_template(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    # the client's default kubeconfig location (read from $KUBECONFIG when it is imported): none here
    monkeypatch.setattr("kubernetes.config.kube_config.KUBE_CONFIG_DEFAULT_LOCATION", str(tmp_path / "none"))
    runner = CliRunner()
    base = ["monitor", "--model", "m", "--window", "15m", "--tracking-uri", "http://127.0.0.1:9"]
    base += ["--prediction-log-url", f"sqlite:///{tmp_path / 'log.db'}", "--retrain"]
    missing = tmp_path / "missing.yaml"
    result = runner.invoke(cli, base, env={"MODELLOOP_RETRAIN_JOB_TEMPLATE": str(missing)})
    assert result.exit_code == 2 and f"retraining Job template {missing} does not exist" in result.output
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(yaml.safe_dump(_broken(["metadata", "generateName"], None)))
    result = runner.invoke(cli, base, env={"MODELLOOP_RETRAIN_JOB_TEMPLATE": str(wrong)})
    assert result.exit_code == 2 and "metadata.generateName is required" in result.output
    # a good template: the Kubernetes retrainer is built, and needs credentials
    good = tmp_path / "job.yaml"
    good.write_text(yaml.safe_dump(TEMPLATE))
    result = runner.invoke(cli, base, env={"MODELLOOP_RETRAIN_JOB_TEMPLATE": str(good)})
    assert result.exit_code == 2 and "no usable kubeconfig" in result.output
    # retraining off: the template is not read
    result = runner.invoke(
        cli,
        [*base[:-1], "--no-retrain"],
        env={"MODELLOOP_RETRAIN_JOB_TEMPLATE": str(missing), "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"},
    )
    assert "retraining Job template" not in result.output


# ----- several workers: the Indexed tuning Job

TUNING = copy.deepcopy(TEMPLATE)
TUNING["metadata"]["generateName"] = "modelloop-tune-"
TUNING["spec"].update({"completionMode": "Indexed", "completions": 2, "parallelism": 2})
TUNING["spec"]["template"]["spec"]["containers"][0]["args"] = [
    "train",
    "--tune-and-finish",
    "--set",
    "study.storage=$(MODELLOOP_STUDY_STORAGE)",
    "--set",
    "study.workers=2",
]


def test_config_workers_reads_the_study_section() -> None:
    assert config_workers("study: {workers: 3}\n") == 3
    assert config_workers("model_name: x\n") == 1
    assert config_workers(": not yaml [") == 1


def test_a_config_with_workers_launches_the_tuning_job(kube: FakeKubeApiServer) -> None:
    api = ApiClient(Configuration(host=kube.url))
    launcher = KubernetesJobRetrainer(TEMPLATE, namespace="ml", api=api, tuning=TUNING)
    base = request()
    launcher.launch(
        RetrainRequest(**{**vars(base), "config_text": "model_name: churn\nstudy: {workers: 5}\n"})
    )
    job = one(kube, "Job")
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == 5
    args = container(job)["args"]
    assert "--tune-and-finish" in args and "study.workers=5" in args and "study.workers=2" not in args
    assert f"study.name=churn-{base.monitoring_run_id[:8]}" in args
    kubernetes_validate.validate(job, kubernetes_validate.latest_version(), strict=True)


def test_a_tuning_template_must_be_indexed() -> None:
    bad = copy.deepcopy(TUNING)
    del bad["spec"]["completionMode"]
    with pytest.raises(ConfigError, match="Indexed"):
        check_tuning_template(bad)
