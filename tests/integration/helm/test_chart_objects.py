"""Properties of the rendered chart (Helm 3 and 4, default and ci/ values): Pod Security "restricted" for
every pod (the retraining Job template included), pinned images, probes, RBAC without wildcards or Secret
reads, hook ordering, the webhook registration as a plain Job per revision, standard labels with selectors
that never carry a version; an external MLflow (no MLflow objects, every process pointed at it), Prometheus
monitors only where the operator's API is served, the controller's and the monitoring job's settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import CI_VALUES, NAMESPACE, RELEASE, Manifest, by_kind, one, pod_spec, render

PRODUCTION = next(p for p in CI_VALUES if p.stem == "production-values")
TRIAL = next(p for p in CI_VALUES if p.stem == "trial-values")
EXTERNAL = next(p for p in CI_VALUES if p.stem == "external-values")
EXTERNAL_URL = "http://mlflow.example:5000"  # mlflow.external.url in external-values.yaml
VALUES = [None, *CI_VALUES]
VALUE_IDS = ["defaults", *(p.stem for p in CI_VALUES)]
VERSION_LABELS = {"helm.sh/chart", "app.kubernetes.io/version"}


def workloads(objects: list[Manifest]) -> list[Manifest]:
    """Every object holding a pod spec, plus the retraining Job template the monitoring job launches."""
    out = [o for o in objects if pod_spec(o) is not None]
    for cm in by_kind(objects, "ConfigMap"):
        if "job.yaml" in (cm.get("data") or {}):
            out.append(yaml.safe_load(cm["data"]["job.yaml"]))
    return out


@pytest.fixture(params=VALUES, ids=VALUE_IDS)
def rendered(request: pytest.FixtureRequest, helm_major: str) -> list[Manifest]:
    return render(helm_major, [request.param] if request.param else None)


def test_every_pod_meets_restricted_pod_security(rendered: list[Manifest]) -> None:
    pods = workloads(rendered)
    assert len(pods) >= 3
    for obj in pods:
        spec = pod_spec(obj)
        assert spec is not None
        where = f"{obj['kind']} {obj['metadata'].get('name') or obj['metadata'].get('generateName')}"
        psc = spec["securityContext"]
        assert psc["runAsNonRoot"] is True, where
        assert psc["runAsUser"] > 0, where
        assert psc["seccompProfile"] == {"type": "RuntimeDefault"}, where
        assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC"), where
        for volume in spec.get("volumes", []):
            assert "hostPath" not in volume, where
        for container in spec["containers"] + spec.get("initContainers", []):
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["runAsNonRoot"] is True, where
            assert sc["capabilities"] == {"drop": ["ALL"]}, where
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, where
            assert "privileged" not in sc, where
            mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
            if container["name"] != "postgresql":
                assert "/tmp" in mounts or container["name"] == "auth-config", where
            assert "ports" not in container or all("hostPort" not in p for p in container["ports"])
            assert container["resources"]["requests"], where
            assert container["resources"]["limits"]["memory"], where


def test_images_are_pinned(rendered: list[Manifest]) -> None:
    for obj in workloads(rendered):
        spec = pod_spec(obj)
        assert spec is not None
        for container in spec["containers"] + spec.get("initContainers", []):
            image = container["image"]
            repo, _, tag = image.rpartition(":")
            assert repo and "/" not in tag and tag not in {"", "latest"}, image


def test_only_pods_that_call_the_api_get_a_token(rendered: list[Manifest]) -> None:
    for obj in workloads(rendered):
        spec = pod_spec(obj)
        assert spec is not None
        component = obj["metadata"]["labels"]["app.kubernetes.io/component"]
        if spec.get("automountServiceAccountToken") is not False:
            assert component in {"controller", "monitoring"}, obj["metadata"]
            assert spec["serviceAccountName"].endswith(component.replace("monitoring", "monitor"))
    for sa in by_kind(rendered, "ServiceAccount"):
        assert sa["automountServiceAccountToken"] is False


def _long_running(objects: list[Manifest]) -> list[Manifest]:
    return [o for o in objects if o["kind"] in {"Deployment", "StatefulSet"}]


def _uses_external_mlflow(objects: list[Manifest]) -> bool:
    return not any(o["metadata"]["labels"]["app.kubernetes.io/component"] == "mlflow" for o in objects)


def test_long_running_containers_have_probes(rendered: list[Manifest]) -> None:
    running = _long_running(rendered)
    components = {o["metadata"]["labels"]["app.kubernetes.io/component"] for o in running}
    assert components >= ({"controller"} if _uses_external_mlflow(rendered) else {"mlflow"})
    for obj in running:
        spec = pod_spec(obj)
        assert spec is not None
        for container in spec["containers"]:
            names = {p["name"] for p in container.get("ports", [])}
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                assert probe in container, f"{obj['metadata']['name']}: {probe}"
                action = container[probe]
                if "httpGet" in action:
                    assert action["httpGet"]["port"] in names
            # liveness gives up later than readiness: a slow pod is taken out of rotation, not killed first
            live, ready = container["livenessProbe"], container["readinessProbe"]
            assert live["periodSeconds"] * live["failureThreshold"] >= (
                ready["periodSeconds"] * ready["failureThreshold"]
            )


def test_mlflow_probes_use_the_unauthenticated_health_route() -> None:
    objects = render("v3", [PRODUCTION])
    dep = one(objects, "Deployment", f"{RELEASE}-modelloop-mlflow")
    [container] = dep["spec"]["template"]["spec"]["containers"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/health", "port": "http"}
    controller = one(objects, "Deployment", f"{RELEASE}-modelloop-controller")
    [container] = controller["spec"]["template"]["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "webhook"}


def _rules(role: Manifest) -> list[dict[str, Any]]:
    return list(role["rules"])


def test_rbac_has_no_wildcards_and_no_secret_reads(rendered: list[Manifest]) -> None:
    assert not by_kind(rendered, "ClusterRole") and not by_kind(rendered, "ClusterRoleBinding")
    for role in by_kind(rendered, "Role"):
        assert role["metadata"]["namespace"] == NAMESPACE
        for rule in _rules(role):
            for key in ("apiGroups", "resources", "verbs", "resourceNames"):
                assert "*" not in rule.get(key, []), (role["metadata"]["name"], rule)
            assert "secrets" not in rule["resources"]
            assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"])
    for binding in by_kind(rendered, "RoleBinding"):
        role = one(rendered, "Role", binding["roleRef"]["name"])
        [subject] = binding["subjects"]
        assert subject["kind"] == "ServiceAccount" and subject["namespace"] == NAMESPACE
        one(rendered, "ServiceAccount", subject["name"])
        assert role["metadata"]["name"] == subject["name"]


def test_controller_role_is_exact() -> None:
    objects = render("v4", [PRODUCTION])
    name = f"{RELEASE}-modelloop-controller"
    grants = {
        (group, resource, verb, tuple(rule.get("resourceNames", [])))
        for rule in _rules(one(objects, "Role", name))
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    scoring = {
        ("apps", "deployments"),
        ("", "services"),
        ("autoscaling", "horizontalpodautoscalers"),
        ("policy", "poddisruptionbudgets"),
    }
    expected = {(g, r, v, ()) for g, r in scoring for v in ("create", "patch", "delete")}
    expected |= {("apps", "deployments", v, ()) for v in ("get", "list")}
    expected |= {("coordination.k8s.io", "leases", "create", ())}
    expected |= {("coordination.k8s.io", "leases", v, (name,)) for v in ("get", "update")}
    assert grants == expected
    monitor = _rules(one(objects, "Role", f"{RELEASE}-modelloop-monitor"))
    assert monitor == [
        {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create"]},
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create", "patch"]},
    ]


def _hook(obj: Manifest) -> tuple[set[str], int, set[str]] | None:
    annotations = obj["metadata"].get("annotations") or {}
    if "helm.sh/hook" not in annotations:
        return None
    return (
        set(annotations["helm.sh/hook"].split(",")),
        int(annotations.get("helm.sh/hook-weight", "0")),
        set(annotations.get("helm.sh/hook-delete-policy", "").split(",")),
    )


def _references(spec: Manifest) -> set[tuple[str, str]]:
    refs = set()
    for volume in spec.get("volumes", []):
        if "configMap" in volume:
            refs.add(("ConfigMap", volume["configMap"]["name"]))
        if "secret" in volume:
            refs.add(("Secret", volume["secret"]["secretName"]))
    for container in spec["containers"] + spec.get("initContainers", []):
        for env in container.get("env", []):
            ref = (env.get("valueFrom") or {}).get("secretKeyRef")
            if ref:
                refs.add(("Secret", ref["name"]))
    return refs


@pytest.mark.parametrize("values", [TRIAL, PRODUCTION], ids=["trial", "production"])
def test_hook_ordering(helm_major: str, values: Path) -> None:
    objects = render(helm_major, [values])
    hooks = {(o["kind"], o["metadata"]["name"]): (o, _hook(o)) for o in objects if _hook(o)}
    # only the `helm test` objects are hooks: nothing makes `helm install`/`upgrade` wait
    assert set(hooks) == {
        ("Pod", f"{RELEASE}-modelloop-test"),
        ("ConfigMap", f"{RELEASE}-modelloop-test-script"),
    }
    test_pod = hooks[("Pod", f"{RELEASE}-modelloop-test")][1]
    script = hooks[("ConfigMap", f"{RELEASE}-modelloop-test-script")][1]
    assert test_pod is not None and script is not None
    assert test_pod[0] == script[0] == {"test"}
    assert script[1] < test_pod[1]  # the script exists before the Pod that mounts it
    present = {(o["kind"], o["metadata"]["name"]) for o in objects}
    for (kind, name), (obj, hook) in hooks.items():
        assert hook is not None
        assert "before-hook-creation" in hook[2], (kind, name)
        spec = pod_spec(obj)
        if spec is None:
            continue
        for ref in _references(spec) & present:
            other = hooks.get(ref)
            if other is not None:  # a hook resource used by a hook: same event, created first
                assert other[1] is not None and other[1][0] >= hook[0] and other[1][1] < hook[1], ref


REGISTER = f"{RELEASE}-modelloop-webhook-register-1"  # `helm template` renders revision 1


@pytest.mark.parametrize("values", [TRIAL, PRODUCTION, EXTERNAL], ids=["trial", "production", "external"])
def test_webhook_registration_is_a_plain_job_per_revision_that_retries(helm_major: str, values: Path) -> None:
    objects = render(helm_major, [values])
    [job] = [
        j
        for j in by_kind(objects, "Job")
        if j["metadata"]["labels"]["app.kubernetes.io/component"] == "webhook-register"
    ]
    assert job["metadata"]["name"] == REGISTER
    assert _hook(job) is None  # a hook would make helm wait for MLflow
    spec = job["spec"]
    # retries with back-off (container restarts) long enough for MLflow to start, then is cleaned up
    assert spec["template"]["spec"]["restartPolicy"] == "OnFailure"
    assert spec["backoffLimit"] >= 10
    assert spec["activeDeadlineSeconds"] >= 1800
    assert spec["ttlSecondsAfterFinished"] > 0
    # what it reads exists as ordinary release objects (or is an existing Secret named in values)
    present = {(o["kind"], o["metadata"]["name"]) for o in objects}
    for ref in _references(spec["template"]["spec"]):
        assert ref in present or ref[1] in {"mlflow-credentials"}, ref
    [container] = spec["template"]["spec"]["containers"]
    assert container["args"][:2] == ["webhook", "register"]


def test_selectors_are_stable_and_labels_standard(rendered: list[Manifest]) -> None:
    for obj in rendered:
        labels = obj["metadata"]["labels"]
        for key in (
            "app.kubernetes.io/name",
            "app.kubernetes.io/instance",
            "app.kubernetes.io/component",
            "app.kubernetes.io/part-of",
            "app.kubernetes.io/version",
            "app.kubernetes.io/managed-by",
            "helm.sh/chart",
        ):
            assert labels.get(key), (obj["kind"], obj["metadata"]["name"], key)
        assert labels["app.kubernetes.io/instance"] == RELEASE
        selector: dict[str, str] | None = None
        if obj["kind"] in {"Deployment", "StatefulSet"}:
            selector = obj["spec"]["selector"]["matchLabels"]
            template = obj["spec"]["template"]["metadata"]["labels"]
            assert selector.items() <= template.items()
        elif obj["kind"] == "Service":
            selector = obj["spec"]["selector"]
        elif obj["kind"] in {"NetworkPolicy", "ServiceMonitor", "PodMonitor"}:
            selector = (obj["spec"].get("podSelector") or obj["spec"].get("selector"))["matchLabels"]
        if selector is not None:
            assert not VERSION_LABELS & set(selector), (obj["kind"], obj["metadata"]["name"])
            assert not any("version" in key for key in selector)
        for claim in obj.get("spec", {}).get("volumeClaimTemplates", []):
            assert not VERSION_LABELS & set(claim["metadata"].get("labels", {}))


def test_services_select_their_pods(rendered: list[Manifest]) -> None:
    running = _long_running(rendered)
    for svc in by_kind(rendered, "Service"):
        matches = [
            o
            for o in running
            if svc["spec"]["selector"].items() <= o["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(matches) == 1, svc["metadata"]["name"]
        [container] = pod_spec(matches[0])["containers"]  # type: ignore[index]
        ports = {p["name"] for p in container["ports"]}
        for port in svc["spec"]["ports"]:
            assert port["targetPort"] in ports


def test_every_object_is_in_the_release_namespace(rendered: list[Manifest]) -> None:
    for obj in rendered:
        assert obj["metadata"]["namespace"] == NAMESPACE, (obj["kind"], obj["metadata"]["name"])


def test_default_install_runs_mlflow_and_postgresql_but_no_controller() -> None:
    objects = render("v3")
    components = {o["metadata"]["labels"]["app.kubernetes.io/component"] for o in _long_running(objects)}
    assert components == {"mlflow", "postgresql"}
    assert not by_kind(objects, "Role") and not by_kind(objects, "CronJob")


def test_generated_secrets_have_no_default_password() -> None:
    from cryptography.fernet import Fernet

    objects = render("v3", [TRIAL])
    auth = one(objects, "Secret", f"{RELEASE}-modelloop-mlflow-auth")
    assert len(auth["stringData"]["password"]) == 32 and auth["stringData"]["password"] != "password1234"
    again = one(render("v3", [TRIAL], ["controller.pollInterval=31"]), "Secret", auth["metadata"]["name"])
    assert again["stringData"]["password"] != auth["stringData"]["password"]  # random, not a constant
    import base64

    keys = one(objects, "Secret", f"{RELEASE}-modelloop-mlflow-keys")["data"]
    Fernet(base64.b64decode(keys["webhook-encryption-key"]))  # a valid Fernet key
    assert len(base64.b64decode(keys["flask-secret-key"])) == 48
    webhook = one(objects, "Secret", f"{RELEASE}-modelloop-webhook")["stringData"]["secret"]
    assert len(webhook) == 48


def test_mlflow_server_settings() -> None:
    objects = render("v4", [PRODUCTION])
    dep = one(objects, "Deployment", f"{RELEASE}-modelloop-mlflow")
    spec = dep["spec"]
    assert spec["replicas"] == 2 and spec["strategy"]["type"] == "RollingUpdate"
    [container] = spec["template"]["spec"]["containers"]
    args = container["args"]
    flags = dict(zip(args[::2], args[1::2], strict=False))
    assert args[args.index("--app-name") + 1] == "basic-auth"
    assert "s3://ml-artifacts/mlflow" in args
    hosts = args[args.index("--allowed-hosts") + 1].split(",")
    assert f"{RELEASE}-modelloop-mlflow.{NAMESPACE}.svc:5000" in hosts and "mlflow.example.com" in hosts
    assert "*" not in hosts
    assert flags["--port"] == "5000"
    env = {e["name"]: e for e in container["env"]}
    assert env["MLFLOW_BACKEND_STORE_URI"]["valueFrom"]["secretKeyRef"] == {"name": "mlflow-db", "key": "uri"}
    keys = f"{RELEASE}-modelloop-mlflow-keys"
    for name, key in (
        ("MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY", "webhook-encryption-key"),
        ("MLFLOW_FLASK_SERVER_SECRET_KEY", "flask-secret-key"),
    ):
        assert env[name]["valueFrom"]["secretKeyRef"] == {"name": keys, "key": key}
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"]["name"] == "mlflow-s3"
    assert "value" not in env["MLFLOW_AUTH_ADMIN_PASSWORD"]
    assert not any(o["kind"] == "StatefulSet" for o in objects)  # external PostgreSQL
    trial = render("v4", [TRIAL])
    trial_dep = one(trial, "Deployment", f"{RELEASE}-modelloop-mlflow")
    assert trial_dep["spec"]["strategy"]["type"] == "Recreate"  # one ReadWriteOnce volume
    one(trial, "PersistentVolumeClaim", f"{RELEASE}-modelloop-mlflow-artifacts")
    one(trial, "StatefulSet", f"{RELEASE}-modelloop-postgresql")


def test_monitoring_cronjobs_follow_the_bindings() -> None:
    objects = render("v3", [PRODUCTION])
    jobs = {c["metadata"]["labels"]["modelloop.io/binding"]: c for c in by_kind(objects, "CronJob")}
    assert set(jobs) == {"churn", "fraud"}
    for binding, model in (("churn", "churn-classifier"), ("fraud", "fraud-scorer")):
        cron = jobs[binding]["spec"]
        assert cron["schedule"] == "0 * * * *" and cron["concurrencyPolicy"] == "Forbid"
        [container] = cron["jobTemplate"]["spec"]["template"]["spec"]["containers"]
        assert container["args"] == ["monitor", "--model", model, "--window", "1h", "--retrain"]
    template = yaml.safe_load(
        one(objects, "ConfigMap", f"{RELEASE}-modelloop-retrain-job")["data"]["job.yaml"]
    )
    [train] = template["spec"]["template"]["spec"]["containers"]
    assert train["args"] == ["train", "--config", "/etc/modelloop/training/config.yaml"]
    config = one(objects, "ConfigMap", f"{RELEASE}-modelloop-training-config")
    assert yaml.safe_load(config["data"]["config.yaml"])["model_name"] == "churn-classifier"


# --- an external MLflow tracking server (mlflow.external.url) ---

MLFLOW_ONLY_KINDS = {
    "Deployment",
    "Service",
    "PersistentVolumeClaim",
    "Secret",
    "ConfigMap",
    "ServiceMonitor",
}


def _modelloop_containers(objects: list[Manifest]) -> dict[str, dict[str, Any]]:
    """Every container running a modelloop process (the Job template in its ConfigMap included), by where."""
    out = {}
    for obj in workloads(objects):
        spec = pod_spec(obj)
        assert spec is not None
        for container in spec["containers"]:
            if container.get("command", [""])[0] == "python":
                where = obj["metadata"].get("name") or obj["metadata"]["generateName"]
                out[f"{obj['kind']} {where}/{container['name']}"] = container
    return out


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


@pytest.mark.parametrize("postgres", ["bundled", "external"])
def test_external_mlflow_renders_no_mlflow_objects(helm_major: str, postgres: str) -> None:
    sets = ["monitoring.retrain=true", "networkPolicy.enabled=true"]
    sets += ["metrics.serviceMonitor.enabled=true", "metrics.podMonitor.enabled=true"]
    if postgres == "bundled":
        sets.append("postgresql.bundled.enabled=true")
    objects = render(helm_major, [EXTERNAL], sets)
    mlflow = [
        (o["kind"], o["metadata"]["name"])
        for o in objects
        if o["metadata"]["labels"]["app.kubernetes.io/component"] == "mlflow"
        or "mlflow" in o["metadata"]["name"]
    ]
    assert mlflow == []
    assert not by_kind(objects, "ServiceMonitor") and not by_kind(objects, "PersistentVolumeClaim")
    one(objects, "PodMonitor", f"{RELEASE}-modelloop-scoring")  # the scoring servers are still scraped
    workload_components = {
        o["metadata"]["labels"]["app.kubernetes.io/component"] for o in _long_running(objects)
    }
    assert workload_components == ({"controller", "postgresql"} if postgres == "bundled" else {"controller"})
    # MLflow's webhook comes from outside the release: the receiver's port is open, signatures guard it
    policy = one(objects, "NetworkPolicy", f"{RELEASE}-modelloop-controller")
    assert policy["spec"]["ingress"] == [{"ports": [{"port": "webhook", "protocol": "TCP"}]}]


def test_external_release_has_no_postgresql_and_no_mlflow_workload(helm_major: str) -> None:
    objects = render(helm_major, [EXTERNAL])
    assert not by_kind(objects, "StatefulSet") and not by_kind(objects, "PersistentVolumeClaim")
    assert [d["metadata"]["name"] for d in by_kind(objects, "Deployment")] == [
        f"{RELEASE}-modelloop-controller"
    ]
    assert [s["metadata"]["name"] for s in by_kind(objects, "Service")] == [f"{RELEASE}-modelloop-controller"]
    # the only Secret it makes is the controller's webhook secret
    assert [s["metadata"]["name"] for s in by_kind(objects, "Secret")] == [f"{RELEASE}-modelloop-webhook"]


@pytest.mark.parametrize("auth_secret", ["mlflow-credentials", ""], ids=["with-credentials", "without"])
def test_every_modelloop_process_uses_the_external_mlflow(helm_major: str, auth_secret: str) -> None:
    objects = render(
        helm_major, [EXTERNAL], ["monitoring.retrain=true", f"mlflow.external.authSecret={auth_secret}"]
    )
    containers = _modelloop_containers(objects)
    wheres = {where.split()[0] for where in containers}
    assert wheres == {"Deployment", "CronJob", "Job", "Pod"}
    assert any(where.startswith("Job ") and "retrain" in where for where in containers)  # the Job template
    assert any(where.startswith("Job ") and "webhook-register" in where for where in containers)
    for where, container in containers.items():
        env = _env(container)
        if container["command"] == ["python", "/scripts/helm_test.py"]:
            args = container["args"]
            assert args[args.index("--mlflow") + 1] == EXTERNAL_URL, where
            assert "MLFLOW_TRACKING_PASSWORD" not in env  # /health needs no credentials
            continue
        assert env["MODELLOOP_TRACKING_URI"]["value"] == EXTERNAL_URL, where
        if auth_secret:
            for name, key in (
                ("MLFLOW_TRACKING_USERNAME", "username"),
                ("MLFLOW_TRACKING_PASSWORD", "password"),
            ):
                assert env[name]["valueFrom"]["secretKeyRef"] == {"name": auth_secret, "key": key}, where
        else:
            assert not {n for n in env if n.startswith("MLFLOW_TRACKING_")}, where
    controller = containers[f"Deployment {RELEASE}-modelloop-controller/controller"]
    assert _env(controller)["MODELLOOP_SCORING_TRACKING_URI"]["value"] == EXTERNAL_URL


def test_bundled_mlflow_credentials_come_from_its_admin_secret() -> None:
    objects = render("v3", [TRIAL], ["monitoring.retrain=true"])
    url = f"http://{RELEASE}-modelloop-mlflow.{NAMESPACE}.svc:5000"
    for where, container in _modelloop_containers(objects).items():
        env = _env(container)
        if "MODELLOOP_TRACKING_URI" not in env:
            continue
        assert env["MODELLOOP_TRACKING_URI"]["value"] == url, where
        ref = env["MLFLOW_TRACKING_PASSWORD"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": f"{RELEASE}-modelloop-mlflow-auth", "key": "password"}, where


def test_external_url_is_used_as_given_without_a_trailing_slash() -> None:
    objects = render("v4", [EXTERNAL], ["mlflow.external.url=https://mlflow.example.com/team-a/"])
    controller = one(objects, "Deployment", f"{RELEASE}-modelloop-controller")
    env = _env(controller["spec"]["template"]["spec"]["containers"][0])
    assert env["MODELLOOP_TRACKING_URI"]["value"] == "https://mlflow.example.com/team-a"


# --- Prometheus Operator objects only where the cluster serves its API ---


@pytest.mark.parametrize("values", [PRODUCTION, TRIAL], ids=["production", "trial"])
def test_monitors_need_the_prometheus_operator_api(helm_major: str, values: Path) -> None:
    sets = ["metrics.serviceMonitor.enabled=true", "metrics.podMonitor.enabled=true"]
    served = render(helm_major, [values], sets)  # --api-versions monitoring.coreos.com/v1
    assert {o["kind"] for o in served} >= {"ServiceMonitor", "PodMonitor"}
    absent = render(helm_major, [values], sets, api_versions=())
    assert not {o["kind"] for o in absent} & {"ServiceMonitor", "PodMonitor"}

    # everything else is the same
    def rest(objects: list[Manifest]) -> list[str]:
        return sorted(
            yaml.safe_dump(o) for o in objects if o["kind"] not in {"ServiceMonitor", "PodMonitor", "Secret"}
        )

    assert rest(served) == rest(absent)
    disabled = render(
        helm_major, [values], ["metrics.serviceMonitor.enabled=false", "metrics.podMonitor.enabled=false"]
    )
    assert not {o["kind"] for o in disabled} & {"ServiceMonitor", "PodMonitor"}


# --- the controller's and the monitoring job's settings ---


def _controller_env(objects: list[Manifest]) -> dict[str, str]:
    dep = one(objects, "Deployment", f"{RELEASE}-modelloop-controller")
    return {e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_controller_passes_the_scoring_deployments_deadlines(helm_major: str) -> None:
    env = _controller_env(render(helm_major, [TRIAL]))
    assert env["MODELLOOP_SCORING_PROGRESS_DEADLINE_SECONDS"] == "300"
    assert env["MODELLOOP_SCORING_MIN_READY_SECONDS"] == "10"
    sets = ["controller.progressDeadlineSeconds=900", "controller.minReadySeconds=0"]
    env = _controller_env(render(helm_major, [TRIAL], sets))
    assert env["MODELLOOP_SCORING_PROGRESS_DEADLINE_SECONDS"] == "900"
    assert env["MODELLOOP_SCORING_MIN_READY_SECONDS"] == "0"


def test_controller_settings_reach_controller_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """The env names are those ControllerSettings (prefix MODELLOOP_) reads for the two fields."""
    from modelloop.deploy.settings import ControllerSettings

    env = _controller_env(render("v3", [TRIAL], ["controller.progressDeadlineSeconds=420"]))
    for name in ("scoring_progress_deadline_seconds", "scoring_min_ready_seconds"):
        monkeypatch.setenv(f"MODELLOOP_{name.upper()}", env[f"MODELLOOP_{name.upper()}"])
    settings = ControllerSettings()
    assert settings.scoring_progress_deadline_seconds == 420
    assert settings.scoring_min_ready_seconds == 10


def test_controller_may_be_scaled_to_zero(helm_major: str) -> None:
    objects = render(helm_major, [TRIAL], ["controller.replicas=0"])
    assert one(objects, "Deployment", f"{RELEASE}-modelloop-controller")["spec"]["replicas"] == 0


def test_monitoring_cronjobs_can_be_suspended(helm_major: str) -> None:
    for sets, suspended in (([], False), (["monitoring.suspend=true"], True)):
        jobs = by_kind(render(helm_major, [PRODUCTION], sets), "CronJob")
        assert len(jobs) == 2
        assert all(job["spec"]["suspend"] is suspended for job in jobs)


def test_network_policies_are_on_by_default(helm_major: str) -> None:
    """Secure by default: without any networkPolicy value the scoring pods take gRPC only from the release
    namespace, and MLflow and PostgreSQL only from the release's pods."""
    objects = render(helm_major, [TRIAL])
    names = {o["metadata"]["name"] for o in by_kind(objects, "NetworkPolicy")}
    assert {f"{RELEASE}-modelloop-{part}" for part in ("scoring", "mlflow", "postgresql")} <= names
    scoring = one(objects, "NetworkPolicy", f"{RELEASE}-modelloop-scoring")
    grpc_rule = next(r for r in scoring["spec"]["ingress"] if {p["port"] for p in r["ports"]} == {8081})
    assert grpc_rule["from"] == [{"podSelector": {}}]  # every pod of the release namespace, nothing else
