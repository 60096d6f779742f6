"""Promotion latency: from `set_registered_model_alias` to the new version answering gRPC calls.

Local target: with the MLflow webhook (median of 5; target <= 5 s) and with the poll only (median of 3;
target <= poll interval + 5 s). The poll interval is shortened to 5 s here so the run stays short; the bound
scales with it. Anchors measured in the same run: MLflow's webhook delivery alone (alias set -> webhook
received) and a bare hot swap (ScoringClient.load_model).

Kubernetes target, on a real control plane with the test suite's node stand-in (tests/kube: pods run as
local processes, so pod start is process start, with no image pull): the controller (webhook-triggered, as
above) rolls a 2-replica Deployment to the new version; measured until every pod of the new version is Ready
and the Service answers with it (median of 3; target <= 15 s). Needs MODELLOOP_TEST_K8S_CONTROL_PLANE
(default: ../shared/k8s when it exists); without it that part says so and the benchmark fails.

Run: `python bench/run.py deploy` (starts its own MLflow server, scoring servers and control plane; about 4
minutes).
"""

from __future__ import annotations

import base64
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

WEBHOOK_TARGET_S = 5.0
KUBERNETES_TARGET_S = 15.0
POLL_INTERVAL_S = 5.0
POLL_SLACK_S = 5.0


def _answering(
    address: str, model: str, version: str, rows: list[dict[str, float]], timeout: float, admin_token: str
) -> float:
    """Seconds until `version` is the champion and a prediction succeeds."""
    from modelloop.client import ScoringClient

    start = time.monotonic()
    client = ScoringClient(address, admin_token=admin_token)
    try:
        while time.monotonic() - start < timeout:
            try:
                champions = {
                    _field(m, "name"): str(_field(m, "champion_version")) for m in client.list_models()
                }
                if champions.get(model) == version:
                    client.predict(model, rows)
                    return time.monotonic() - start
            except Exception:
                pass
            time.sleep(0.02)
    finally:
        client.close()
    raise TimeoutError(f"{model}/{version} not answering within {timeout}s")


def main() -> int:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = "5"
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import mlflow

    from modelloop.client import ScoringClient
    from modelloop.deploy.bindings import parse_bindings
    from modelloop.deploy.controller import Controller
    from modelloop.deploy.local import LocalTarget
    from modelloop.deploy.mlflow_server import MlflowServer
    from modelloop.deploy.registry import MlflowRegistry
    from modelloop.deploy.webhook_registration import register_webhook
    from tests.models import register_reference_model

    data = Path(tempfile.mkdtemp(prefix="modelloop-bench-deploy-"))
    key = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
    server = MlflowServer(
        data / "mlflow", webhook_secret_key=key, extra_env={"MLFLOW_WEBHOOK_CACHE_TTL": "1"}
    )
    server.start(timeout=120)
    target = LocalTarget(tracking_uri=server.url, work_dir=data / "serving")
    try:
        name = "bench-deploy"
        versions = [register_reference_model(server.url, name, max_iter=5 + i, seed=i) for i in range(2)]
        rows = [
            {k: float(v) for k, v in r.items()}
            for r in versions[0].features.head(1).to_dict(orient="records")
        ]
        client = mlflow.MlflowClient(server.url)
        bindings = parse_bindings({"bindings": [{"name": "bench", "model": name}]})
        secret = secrets.token_urlsafe(24)

        ctl = Controller(bindings, MlflowRegistry(server.url), {"local": target}, poll_interval=3600,
                         webhook_secret=secret)  # fmt: skip
        hook = ctl.webhook
        assert hook is not None
        ctl.start()
        register_webhook(server.url, url=hook.url, secret=secret)
        time.sleep(1.5)  # the server's webhook list cache (1 s here)
        client.set_registered_model_alias(name, "production", versions[0].version)
        _wait_deployed(target, 120)
        _answering(target.address("bench"), name, versions[0].version, rows, 120, target.admin_token)

        webhook_s, delivery_s = [], []  # delivery: the anchor, MLflow's webhook delivery alone
        for i in range(5):
            version = versions[(i + 1) % 2].version
            before = hook.accepted
            t0 = time.monotonic()
            client.set_registered_model_alias(name, "production", version)
            while hook.accepted == before and time.monotonic() - t0 < 30:
                time.sleep(0.005)
            delivery_s.append(time.monotonic() - t0)
            webhook_s.append(
                time.monotonic()
                - t0
                + _answering(target.address("bench"), name, version, rows, 60, target.admin_token)
            )
        ctl.stop()

        # anchor 2: a bare hot swap through the client
        swap_s = []
        scoring = ScoringClient(target.address("bench"), admin_token=target.admin_token)
        current = champion_now(scoring, name)
        for _ in range(3):
            version = versions[0].version if current == versions[1].version else versions[1].version
            t0 = time.monotonic()
            scoring.load_model(name, version, timeout=60)
            swap_s.append(time.monotonic() - t0)
            current = version
        scoring.close()
        target.update(target_spec(bindings[0], current), deadline=60)  # keep the target's record in line

        # poll only
        ctl = Controller(
            bindings, MlflowRegistry(server.url), {"local": target}, poll_interval=POLL_INTERVAL_S
        )
        ctl.start()
        poll_s = []
        for _ in range(3):
            version = versions[0].version if current == versions[1].version else versions[1].version
            t0 = time.monotonic()
            client.set_registered_model_alias(name, "production", version)
            poll_s.append(
                time.monotonic()
                - t0
                + _answering(target.address("bench"), name, version, rows, 60, target.admin_token)
            )
            current = version
        ctl.stop()
        kube_s = _kubernetes(server.url, name, [v.version for v in versions], rows)
    finally:
        target.close()
        server.stop()

    w, p = statistics.median(webhook_s), statistics.median(poll_s)
    bound = POLL_INTERVAL_S + POLL_SLACK_S
    table = [
        ("anchor: MLflow webhook delivery", statistics.median(delivery_s), len(delivery_s), None),
        ("anchor: bare hot swap (load_model)", statistics.median(swap_s), len(swap_s), None),
        ("alias -> new version answering, webhook", w, len(webhook_s), WEBHOOK_TARGET_S),
        (f"alias -> answering, poll only ({POLL_INTERVAL_S:.0f} s poll)", p, len(poll_s), bound),
    ]
    if kube_s:
        table.append(
            (
                "kubernetes: alias -> 2 pods Ready, answering",
                statistics.median(kube_s),
                len(kube_s),
                KUBERNETES_TARGET_S,
            )
        )
    print(f"{'measure':44} {'median s':>9} {'runs':>5} {'target s':>9} {'ratio':>6}")
    for label, median, runs, limit in table:
        extra = f" {limit:9.1f} {median / limit:6.2f}" if limit else ""
        print(f"{label:44} {median:9.2f} {runs:5d}{extra}")
    print("webhook runs:", ", ".join(f"{x:.2f}" for x in webhook_s))
    print("poll runs:", ", ".join(f"{x:.2f}" for x in poll_s))
    if kube_s:
        print("kubernetes runs:", ", ".join(f"{x:.2f}" for x in kube_s))
    else:
        print("kubernetes: not measured (no control plane: set MODELLOOP_TEST_K8S_CONTROL_PLANE)")
    kube_ok = bool(kube_s) and statistics.median(kube_s) <= KUBERNETES_TARGET_S
    return 0 if w <= WEBHOOK_TARGET_S and p <= bound and kube_ok else 1


def _kubernetes(
    tracking_uri: str, model: str, versions: list[str], rows: list[dict[str, float]]
) -> list[float]:
    """Seconds from alias set to every pod of the new version Ready and answering, per promotion."""
    import mlflow
    from kubernetes import client as kube_client
    from kubernetes import config as kube_config

    from modelloop.client import ScoringClient
    from modelloop.deploy.bindings import parse_bindings
    from modelloop.deploy.controller import Controller
    from modelloop.deploy.kubernetes.api import DynamicKubeApi
    from modelloop.deploy.kubernetes.manifests import ServingOptions
    from modelloop.deploy.kubernetes.target import KubernetesTarget
    from modelloop.deploy.registry import MlflowRegistry
    from modelloop.deploy.webhook_registration import register_webhook
    from tests.kube import control_plane
    from tests.kube.node import NodeStandIn
    from tests.kube.proxy import ServiceProxy

    shared = Path(__file__).resolve().parents[2] / "shared" / "k8s"
    if not os.environ.get(control_plane.SETTING) and (shared / "control-plane").exists():
        os.environ[control_plane.SETTING] = str(shared)
    script = control_plane.tool()
    if script is None:
        return []
    plane = control_plane.start(script, Path(tempfile.mkdtemp(prefix="modelloop-bench-k8s-")))
    node = NodeStandIn(plane.kubeconfig, Path(tempfile.mkdtemp(prefix="modelloop-bench-node-")))
    node.start()
    ns, replicas = "bench", 2
    core = kube_client.CoreV1Api(kube_config.new_client_from_config(config_file=str(plane.kubeconfig)))
    core.create_namespace({"metadata": {"name": ns}})
    [binding] = parse_bindings(
        {
            "bindings": [
                {
                    "name": "bench",
                    "model": model,
                    "target": "kubernetes",
                    "namespace": ns,
                    "replicas": replicas,
                }
            ]
        }
    )
    target = KubernetesTarget(
        DynamicKubeApi(kubeconfig=str(plane.kubeconfig)),
        namespaces=[ns],
        image="modelloop:bench",
        options=ServingOptions(tracking_uri=tracking_uri, min_ready_seconds=0, progress_deadline_seconds=120),
        poll=0.2,
    )
    secret = secrets.token_urlsafe(24)
    ctl = Controller([binding], MlflowRegistry(tracking_uri), {"kubernetes": target}, poll_interval=3600,
                     rollout_deadline=180, webhook_secret=secret)  # fmt: skip
    hook = ctl.webhook
    assert hook is not None
    registry = mlflow.MlflowClient(tracking_uri)
    proxy: ServiceProxy | None = None
    timings = []
    try:
        ctl.start()
        register_webhook(tracking_uri, url=hook.url, secret=secret, name="bench-kubernetes")
        time.sleep(1.5)

        def settled(version: str, t0: float, scoring: ScoringClient | None) -> float:
            while time.monotonic() - t0 < 180:
                pods = core.list_namespaced_pod(ns, label_selector="app.kubernetes.io/instance=bench").items
                new = [
                    p
                    for p in pods
                    if (p.metadata.annotations or {}).get("modelloop.io/model-version") == version
                    and p.metadata.deletion_timestamp is None
                    and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
                ]
                if len(new) == replicas and scoring is not None:
                    try:
                        if scoring.predict(model, rows, timeout=5).model_version == version:
                            return time.monotonic() - t0
                    except Exception:
                        pass
                elif len(new) == replicas:
                    return time.monotonic() - t0
                time.sleep(0.05)
            raise TimeoutError(f"{model}/{version} not rolled out on Kubernetes within 180 s")

        current = versions[0]
        registry.set_registered_model_alias(model, "production", current)
        settled(current, time.monotonic(), None)
        proxy = ServiceProxy(node, ns, "modelloop-bench", "grpc")
        with ScoringClient(proxy.address) as scoring:
            for _ in range(3):
                current = versions[1] if current == versions[0] else versions[0]
                t0 = time.monotonic()
                registry.set_registered_model_alias(model, "production", current)
                timings.append(settled(current, t0, scoring))
                time.sleep(6)  # the old pods' preStop and drain finish before the next promotion
    finally:
        ctl.stop()
        if proxy is not None:
            proxy.close()
        node.stop()
        plane.down()
    return timings


def _field(item: object, key: str) -> object:
    return item[key] if isinstance(item, dict) else getattr(item, key)


def _wait_deployed(target: object, timeout: float) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            target.address("bench")  # type: ignore[attr-defined]
            return
        except KeyError:
            time.sleep(0.05)
    raise TimeoutError("first deployment did not happen")


def champion_now(client: object, model: str) -> str:
    for m in client.list_models():  # type: ignore[attr-defined]
        if _field(m, "name") == model:
            return str(_field(m, "champion_version"))
    raise LookupError(model)


def target_spec(binding: object, version: str) -> object:
    from modelloop.deploy.target import DeploymentSpec

    return DeploymentSpec(binding=binding, champion_version=version)  # type: ignore[arg-type]


if __name__ == "__main__":
    raise SystemExit(main())
