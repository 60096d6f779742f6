"""The chart and the retraining launcher agree. The Job template the chart renders (real `helm template`,
Helm 3 and 4, retraining on) is read from its ConfigMap where the monitoring CronJob's settings point, and
run through `deploy.kubernetes.retrain_job.KubernetesJobRetrainer` against a fake Kubernetes API server on
loopback (the real `kubernetes` client above it). The Job and ConfigMap it creates validate against the 1.30
and newest schemas, keep the chart's hardened pod, take the config where `--config` points, and need no more
than the monitoring Role grants."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import mlflow
import pytest
import yaml

from modelloop.contract.predlog import SqlPredictionLog
from modelloop.contract.registry import TAG_RETRAIN_DECISION
from modelloop.deploy.kubernetes.retrain_job import cluster_retrainer
from modelloop.deploy.kubernetes.retrain_template import CONFIG_PATH
from modelloop.monitoring.retrain import RetrainRequest
from modelloop.monitoring.settings import MonitorSettings
from modelloop.monitoring.window import Window
from tests.integration.monitoring.conftest import (
    T0,
    TRAINING_CONFIG,
    WINDOW,
    register_monitored,
    window_batches,
    write,
)
from tests.unit.deploy.fake_kube_http import FakeKubeApiServer, write_kubeconfig

from .conftest import CI_VALUES, NAMESPACE, RELEASE, Manifest, by_kind, one, render

PRODUCTION = next(p for p in CI_VALUES if p.stem == "production-values")
MINIMAL = [
    "bindings[0].name=churn",
    "bindings[0].model=churn-classifier",
    "monitoring.retrain=true",
    "retraining.config.model_name=churn-classifier",
]
VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]
CONFIG_TEXT = "model_name: churn-classifier\ndataset: {source: sklearn, name: breast_cancer}\n"
RUN_ID = "5f0c1d2e3a4b5c6d7e8f90a1b2c3d4e5"
# (HTTP method, resource) of each call the launcher made -> (API group, RBAC verb)
VERB = {
    ("POST", "configmaps"): ("", "create"),
    ("PATCH", "configmaps"): ("", "patch"),
    ("POST", "jobs"): ("batch", "create"),
}


@pytest.fixture(params=["production", "minimal"])
def chart(request: pytest.FixtureRequest, helm_major: str) -> list[Manifest]:
    if request.param == "production":
        return render(helm_major, [PRODUCTION])
    return render(helm_major, sets=MINIMAL)


@pytest.fixture
def kube() -> Iterator[FakeKubeApiServer]:
    with FakeKubeApiServer() as server:
        yield server


def _monitor_pod(chart: list[Manifest]) -> Manifest:
    cron = by_kind(chart, "CronJob")[0]
    return dict(cron["spec"]["jobTemplate"]["spec"]["template"]["spec"])


def _template_file(chart: list[Manifest], tmp_path: Path) -> tuple[Path, MonitorSettings]:
    """job.yaml from the rendered ConfigMap, placed where the CronJob's volume mount puts it, and the
    monitor's settings parsed from the CronJob's env (the namespace from the downward API)."""
    pod = _monitor_pod(chart)
    [container] = pod["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["MODELLOOP_RETRAIN_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    template_path = Path(env["MODELLOOP_RETRAIN_JOB_TEMPLATE"]["value"])
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == str(template_path.parent))
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    config_map = one(chart, "ConfigMap", volume["configMap"]["name"])
    local = tmp_path / template_path.relative_to("/")
    local.parent.mkdir(parents=True)
    local.write_text(config_map["data"][template_path.name])
    settings = MonitorSettings(
        retrain_job_template=local, retrain_namespace=NAMESPACE, tracking_uri="http://from-monitor:5000"
    )
    return local, settings


def _grants(chart: list[Manifest], service_account: str) -> set[tuple[str, str, str]]:
    bindings = [
        b
        for b in by_kind(chart, "RoleBinding")
        if any(s["kind"] == "ServiceAccount" and s["name"] == service_account for s in b["subjects"])
    ]
    out: set[tuple[str, str, str]] = set()
    for binding in bindings:
        role = one(chart, "Role", binding["roleRef"]["name"])
        out |= {
            (group, resource, verb)
            for rule in role["rules"]
            for group in rule["apiGroups"]
            for resource in rule["resources"]
            for verb in rule["verbs"]
        }
    return out


def test_the_chart_template_launches_through_the_retrainer(
    chart: list[Manifest], kube: FakeKubeApiServer, tmp_path: Path
) -> None:
    path, settings = _template_file(chart, tmp_path)
    assert settings.retrain_job_template is not None
    template: dict[str, Any] = yaml.safe_load(path.read_text())
    retrainer = cluster_retrainer(
        settings.retrain_job_template,
        namespace=settings.retrain_namespace,
        kubeconfig=write_kubeconfig(tmp_path / "kubeconfig", kube.url),
    )
    launch = retrainer.launch(
        RetrainRequest(
            model_name="churn-classifier",
            model_version="7",
            training_run_id="ab" * 16,
            config_text=CONFIG_TEXT,
            tracking_uri=settings.tracking_uri,
            monitoring_run_id=RUN_ID,
            cause="drift:2026-11-23T10:00",
        )
    )
    [job] = kube.of_kind("Job")
    [cm] = kube.of_kind("ConfigMap")
    for obj in (job, cm):
        for version in VERSIONS:
            kubernetes_validate.validate(obj, version, strict=True)
    assert launch.details == {"job": job["metadata"]["name"], "namespace": NAMESPACE}
    assert job["metadata"]["name"].startswith(f"{RELEASE}-modelloop-retrain-")
    assert job["metadata"]["namespace"] == cm["metadata"]["namespace"] == NAMESPACE
    # the chart's Job is kept: limits, TTL, the hardened pod and container
    for key in ("backoffLimit", "activeDeadlineSeconds", "ttlSecondsAfterFinished"):
        assert job["spec"][key] == template["spec"][key]
    pod, chart_pod = job["spec"]["template"]["spec"], template["spec"]["template"]["spec"]
    assert pod["securityContext"] == chart_pod["securityContext"]
    assert pod["automountServiceAccountToken"] is False
    [train], [chart_train] = pod["containers"], chart_pod["containers"]
    for key in ("image", "command", "env", "resources", "securityContext"):
        assert train[key] == chart_train[key]
    # the config arrives where --config points; the tracking URI comes from the chart's env, not an argument
    assert train["args"] == ["train", "--config", CONFIG_PATH, "--triggered-by", RUN_ID]
    assert "MODELLOOP_TRACKING_URI" in {e["name"] for e in train["env"]}
    config_dir, config_file = CONFIG_PATH.rsplit("/", 1)
    [mount] = [m for m in train["volumeMounts"] if m["mountPath"] == config_dir]
    [chart_mount] = [m for m in chart_train["volumeMounts"] if m["mountPath"] == config_dir]
    assert chart_mount["name"] == mount["name"]
    [volume] = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume["configMap"]["name"] == cm["metadata"]["name"]
    assert {i["path"]: cm["data"][i["key"]] for i in volume["configMap"]["items"]} == {
        config_file: CONFIG_TEXT
    }
    assert "/tmp" in {m["mountPath"] for m in train["volumeMounts"]}
    static = f"{RELEASE}-modelloop-training-config"
    assert all(v.get("configMap", {}).get("name") != static for v in pod["volumes"])
    assert cm["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "name": job["metadata"]["name"],
            "uid": job["metadata"]["uid"],
        }
    ]
    for key in ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/component"):
        assert (
            cm["metadata"]["labels"][key]
            == job["metadata"]["labels"][key]
            == template["metadata"]["labels"][key]
        )
    # every call the launcher made is granted to the monitoring ServiceAccount, and nothing on ConfigMaps more
    monitor_pod = _monitor_pod(chart)
    assert monitor_pod["automountServiceAccountToken"] is True
    grants = _grants(chart, monitor_pod["serviceAccountName"])
    used = set()
    for method, url, _ in kube.requests:
        resource = url.split("?")[0].split("/namespaces/")[1].split("/")[1]
        group, verb = VERB[(method, resource)]
        used.add((group, resource, verb))
    assert used == {("", "configmaps", "create"), ("batch", "jobs", "create"), ("", "configmaps", "patch")}
    assert used == grants  # exactly the calls it makes, nothing more


def test_monitor_command_launches_the_chart_job_when_drift_fires(
    mlflow_server: str, kube: FakeKubeApiServer, tmp_path: Path
) -> None:
    """`modelloop monitor --retrain` as the CronJob runs it (a process; the template and namespace from the
    env the chart sets; credentials from a kubeconfig here): a drifted window fires, and the Job it launches
    trains the serving version's config with `--triggered-by` the monitoring run, which records the Job."""
    monitored = register_monitored(mlflow_server, "retrain-job-chart")
    name = monitored.model.name
    window = Window(T0 + 40 * WINDOW, T0 + 41 * WINDOW)
    url = f"sqlite:///{tmp_path / 'predictions.db'}"
    store = SqlPredictionLog(url)
    try:
        write(store, window_batches(monitored, window.start, 1200, seed=40, shift=1.0))
    finally:
        store.close()
    config = tmp_path / "monitoring.yaml"
    config.write_text(f"models:\n  {name}:\n    retrain: {{consecutive_windows: 1, min_rows: 500}}\n")
    template, _ = _template_file(render("v4", [PRODUCTION]), tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBERNETES_", "MODELLOOP_"))}
    env.update(
        MODELLOOP_RETRAIN_JOB_TEMPLATE=str(template),
        MODELLOOP_RETRAIN_NAMESPACE=NAMESPACE,
        MODELLOOP_DATA_DIR=str(tmp_path / "data"),
        KUBECONFIG=str(write_kubeconfig(tmp_path / "kubeconfig", kube.url)),
    )
    start, end = window.iso()
    args = ["--model", name, "--start", start, "--end", end, "--tracking-uri", mlflow_server]
    args += ["--prediction-log-url", url, "--config", str(config), "--retrain"]
    done = subprocess.run(
        [sys.executable, "-m", "modelloop", "monitor", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "retrain=fired" in done.stdout, done.stdout
    run_id = done.stdout.strip().split("run=")[-1]
    [job] = kube.of_kind("Job")
    [cm] = kube.of_kind("ConfigMap")
    for obj in (job, cm):
        kubernetes_validate.validate(obj, VERSIONS[-1], strict=True)
    [train] = job["spec"]["template"]["spec"]["containers"]
    assert train["args"] == ["train", "--config", CONFIG_PATH, "--triggered-by", run_id]
    assert cm["data"] == {"config.yaml": TRAINING_CONFIG}  # the serving version's resolved config
    assert job["metadata"]["annotations"]["modelloop.io/model-version"] == monitored.model.version
    assert cm["metadata"]["ownerReferences"][0]["uid"] == job["metadata"]["uid"]
    tags = mlflow.MlflowClient(mlflow_server).get_run(run_id).data.tags
    assert tags[TAG_RETRAIN_DECISION] == "fired"
    assert tags["modelloop.retrain.job"] == job["metadata"]["name"]
    assert tags["modelloop.retrain.namespace"] == NAMESPACE
