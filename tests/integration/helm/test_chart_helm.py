"""The chart through the real Helm 3 and Helm 4 binaries: `helm lint --strict`, `helm template` with the
default values and each ci/ values file, the schema refusing bad values, and every rendered object valid
against the official Kubernetes schemas of 1.30 and the newest version kubernetes-validate knows."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from .conftest import CHART, CI_VALUES, NAMESPACE, RELEASE, ROOT, render, run_helm

K8S_VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]
# Prometheus Operator kinds are CRDs: no official schema; checked by the object tests instead
CRD_KINDS = {"ServiceMonitor", "PodMonitor"}
VALUES = [None, *CI_VALUES]
VALUE_IDS = ["defaults", *(p.stem for p in CI_VALUES)]


def test_ci_values_files_exist() -> None:
    assert {p.stem for p in CI_VALUES} >= {"production-values", "trial-values"}


@pytest.mark.parametrize("values", VALUES, ids=VALUE_IDS)
def test_lint_strict(helm_major: str, values: Path | None) -> None:
    args = ["lint", "--strict", str(CHART), "--namespace", NAMESPACE]
    if values is not None:
        args += ["-f", str(values)]
    done = run_helm(helm_major, *args)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 chart(s) failed" in done.stdout
    assert "[WARNING]" not in done.stdout and "[ERROR]" not in done.stdout


@pytest.mark.parametrize("values", VALUES, ids=VALUE_IDS)
def test_rendered_objects_validate(helm_major: str, values: Path | None) -> None:
    objects = render(helm_major, [values] if values else None)
    assert objects
    unvalidated = set()
    for obj in objects:
        if obj["kind"] in CRD_KINDS:
            unvalidated.add(obj["kind"])
            continue
        for version in K8S_VERSIONS:
            kubernetes_validate.validate(obj, version, strict=True)
    assert unvalidated <= CRD_KINDS
    if values is not None and values.stem == "production-values":
        assert unvalidated == CRD_KINDS


def test_helm3_and_helm4_render_the_same() -> None:
    for values in VALUES:
        paths = [values] if values else None

        def stable(objs: list[dict[str, object]]) -> list[str]:
            # generated secrets differ per render; compare everything else
            return sorted(yaml.safe_dump(o) for o in objs if o["kind"] != "Secret")

        assert stable(render("v3", paths)) == stable(render("v4", paths))


def _write(tmp_path: Path, document: object) -> Path:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return path


BAD_VALUES = [
    ({"mlflow": {"replicaz": 2}}, "replicaz"),
    ({"mlflow": {"replicas": "two"}}, "replicas"),
    ({"bindings": [{"name": "churn", "model": "m", "autoscaling": {"min": 1, "max": 3, "cpu": 70}}]}, "cpu"),
    ({"bindings": [{"name": "Churn_1", "model": "m"}]}, "name"),
    ({"bindings": [{"name": "churn", "model": "m", "namespace": "other"}]}, "namespace"),
    ({"bindings": [{"name": "churn"}]}, "model"),
    ({"controller": {"pollInterval": "soon"}}, "pollInterval"),
    ({"image": {"tag": "latest"}}, "tag"),
    ({"networkPolicy": {"enabled": "yes"}}, "enabled"),
    ({"mlflow": {"artifacts": {"type": "gcs"}}}, "type"),
    ({"postgresql": {"bundled": {"enabled": False}}}, "mlflowSecret"),
    ({"mlflow": {"artifacts": {"type": "s3"}}}, "bucket"),
    ({"tests": {"binding": 3}}, "binding"),
    ({"mlflow": {"external": {"url": "mlflow.example:5000"}}}, "url"),
    ({"mlflow": {"external": {"url": "ftp://mlflow.example"}}}, "url"),
    ({"mlflow": {"external": {"authSecret": "mlflow-credentials"}}}, "url"),  # credentials need a server
    ({"mlflow": {"external": {"token": "x"}}}, "token"),
    ({"controller": {"replicas": -1}}, "replicas"),
    ({"controller": {"progressDeadlineSeconds": "5m"}}, "progressDeadlineSeconds"),
    ({"controller": {"minReadySeconds": -1}}, "minReadySeconds"),
    ({"monitoring": {"suspend": "yes"}}, "suspend"),
    (
        {"postgresql": {"bundled": {"enabled": False}, "external": {"mlflowSecret": "db"}}},
        "predictionLogSecret",
    ),
]


@pytest.mark.parametrize(("document", "named"), BAD_VALUES, ids=[b[1] for b in BAD_VALUES])
def test_schema_rejects_bad_values(helm_major: str, tmp_path: Path, document: object, named: str) -> None:
    path = _write(tmp_path, document)
    done = run_helm(helm_major, "template", RELEASE, str(CHART), "-f", str(path))
    assert done.returncode != 0
    assert done.stdout == ""
    assert "values don't meet the specifications of the schema" in done.stderr
    assert named in done.stderr


def test_schema_rejection_never_echoes_values(helm_major: str, tmp_path: Path) -> None:
    path = _write(tmp_path, {"controller": {"webhookPort": "s3cr3t-looking-value"}})
    done = run_helm(helm_major, "template", RELEASE, str(CHART), "-f", str(path))
    assert done.returncode != 0
    assert "webhookPort" in done.stderr
    assert "s3cr3t-looking-value" not in done.stderr


def test_template_guards_name_the_problem(helm_major: str, tmp_path: Path) -> None:
    # retraining needs no config in the values: each Job runs the serving version's own config
    path = _write(
        tmp_path,
        {"bindings": [{"name": "a", "model": "m"}], "monitoring": {"retrain": True}},
    )
    done = run_helm(helm_major, "template", RELEASE, str(CHART), "-f", str(path))
    assert done.returncode == 0, done.stderr
    assert f"name: {RELEASE}-modelloop-retrain-job" in done.stdout
    path = _write(tmp_path, {"mlflow": {"replicas": 2}})
    done = run_helm(helm_major, "template", RELEASE, str(CHART), "-f", str(path))
    assert done.returncode != 0 and "mlflow.replicas" in done.stderr
    # Kubernetes refuses a Deployment whose progress deadline is not longer than minReadySeconds
    bindings = [{"name": "a", "model": "m"}]
    path = _write(tmp_path, {"bindings": bindings, "controller": {"progressDeadlineSeconds": 10}})
    done = run_helm(helm_major, "template", RELEASE, str(CHART), "-f", str(path))
    assert done.returncode != 0
    assert "controller.progressDeadlineSeconds" in done.stderr and "controller.minReadySeconds" in done.stderr


GOOD_VALUES = [
    # an external MLflow needs no database Secret for MLflow, nor credentials
    {
        "mlflow": {"external": {"url": "https://mlflow.example.com/team-a"}},
        "postgresql": {"bundled": {"enabled": False}, "external": {"predictionLogSecret": "predlog"}},
    },
    {"mlflow": {"external": {"url": "http://mlflow.mlflow.svc:5000", "authSecret": "creds"}}},
    # the bundled MLflow's own settings are ignored (not checked) with an external one
    {"mlflow": {"replicas": 3, "external": {"url": "http://mlflow.example:5000"}}},
    {"controller": {"replicas": 0}, "bindings": [{"name": "a", "model": "m"}]},
    {"monitoring": {"suspend": True}, "bindings": [{"name": "a", "model": "m"}]},
]


@pytest.mark.parametrize("document", GOOD_VALUES)
def test_schema_and_guards_accept_good_values(helm_major: str, tmp_path: Path, document: object) -> None:
    path = _write(tmp_path, document)
    done = run_helm(helm_major, "lint", "--strict", str(CHART), "--namespace", NAMESPACE, "-f", str(path))
    assert done.returncode == 0, done.stdout + done.stderr
    done = run_helm(helm_major, "template", RELEASE, str(CHART), "-f", str(path))
    assert done.returncode == 0, done.stderr


def test_fetch_helm_is_idempotent_and_pinned() -> None:
    """`make helm-bin` ran before the tests: a second run finds both binaries cached and downloads nothing."""
    import subprocess

    done = subprocess.run(
        ["bash", str(ROOT / "tools" / "fetch-helm.sh")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "helm v3.17.3: .cache/helm/v3/helm (cached)",
        "helm v4.1.4: .cache/helm/v4/helm (cached)",
    ]
    for major, version in (("v3", "v3.17.3"), ("v4", "v4.1.4")):
        shown = run_helm(major, "version", "--template", "{{.Version}}")
        assert shown.stdout == version


def _notes(*args: str) -> str:
    # Helm 4 renders NOTES in a client-only dry run (Helm 3 wants a cluster for that); the cluster it
    # assumes serves no Prometheus Operator API
    done = run_helm("v4", "install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--dry-run=client", *args)
    assert done.returncode == 0, done.stderr
    return done.stdout.split("NOTES:", 1)[1]


@pytest.mark.parametrize("values", VALUES, ids=VALUE_IDS)
def test_notes_tell_how_to_reach_mlflow_and_call_a_model(values: Path | None) -> None:
    notes = _notes(*(["-f", str(values)] if values is not None else []))
    document = yaml.safe_load(values.read_text(encoding="utf-8")) if values else {}
    external = document.get("mlflow", {}).get("external", {})
    if external.get("url"):
        assert f"MLflow: the external tracking server {external['url']} (mlflow.external.url)" in notes
        assert "runs no MLflow of its own" in notes
        assert f'Secret "{external["authSecret"]}"' in notes
        assert "port-forward svc/" + f"{RELEASE}-modelloop-mlflow" not in notes
    else:
        assert "MLflow: the bundled tracking server" in notes
        assert f"port-forward svc/{RELEASE}-modelloop-mlflow 5000:5000" in notes
        assert f"get secret {RELEASE}-modelloop-mlflow-auth" in notes
    assert f"helm test {RELEASE}" in notes
    bindings = document.get("bindings", [])
    if bindings:
        first = bindings[0]["name"]
        assert f"port-forward svc/modelloop-{first} 8081:8081" in notes
        assert "inference.GRPCInferenceService/ModelInfer" in notes
        assert (ROOT / "proto" / "inference" / "grpc_predict_v2.proto").is_file()
        for binding in bindings:
            assert f"{binding['name']}: model {binding['model']}" in notes
        # registration does not hold the install up; the poll covers the time until it completes
        assert f"Job {RELEASE}-modelloop-webhook-register-1; helm did not wait for it" in notes
        assert "retries until MLflow answers" in notes and "the poll catches every promotion" in notes
    else:
        assert "No bindings yet" in notes
        assert "webhook-register" not in notes


def test_notes_name_an_external_mlflow_without_credentials() -> None:
    notes = _notes(
        "--set",
        "mlflow.external.url=https://mlflow.example.com",
        "--set",
        "bindings[0].name=a,bindings[0].model=m",
    )
    assert "MLflow: the external tracking server https://mlflow.example.com" in notes
    assert "without credentials (mlflow.external.authSecret is empty)" in notes
    assert f"must reach http://{RELEASE}-modelloop-controller.{NAMESPACE}.svc:8090/webhook" in notes


def test_notes_say_which_monitors_were_not_created_and_why() -> None:
    both = ["--set", "metrics.serviceMonitor.enabled=true", "--set", "metrics.podMonitor.enabled=true"]
    notes = _notes(*both)
    assert (
        "Prometheus monitors NOT created although enabled (metrics.serviceMonitor, metrics.podMonitor)"
        in notes
    )
    why = "does not serve\nmonitoring.coreos.com/v1 (the Prometheus Operator's CRDs are not installed)"
    assert why in notes
    assert "Prometheus monitors NOT created" not in _notes()
    # with an external MLflow there is no MLflow server to scrape: the ServiceMonitor is left out for that
    notes = _notes(*both, "--set", "mlflow.external.url=http://mlflow.example:5000")
    assert "Prometheus monitors NOT created although enabled (metrics.podMonitor)" in notes
    assert "ServiceMonitor NOT created although enabled (metrics.serviceMonitor)" in notes
    assert "uses an external one" in notes
