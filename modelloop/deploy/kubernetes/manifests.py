"""Renders one binding into the Kubernetes objects that serve it. Pure: no I/O, no `kubernetes` import.

Called by `deploy.kubernetes.target.KubernetesTarget` (applied with server-side apply) and by the Helm chart's
tests, which check that the chart's scoring objects agree with these. `render_binding` returns, in order:

- `apps/v1 Deployment` `modelloop-<binding>`: the model version pinned in the pod spec (container args and the
  `modelloop.io/model-version` annotation), so `kubectl rollout undo` goes back to the previous version;
  `--workers` from the container's CPU limit (its cores rounded up, at least 1; no limit: the server's own
  default, the CPUs the pod may use), so every core the pod is given serves calls;
  RollingUpdate with `maxUnavailable: 0`, `maxSurge: 1`, `minReadySeconds`, `progressDeadlineSeconds`;
  native gRPC startup, readiness and liveness probes on the scoring port (health needs no TLS or auth);
  a preStop sleep and a termination grace longer than preStop + the server's drain; resources;
  the Pod Security "restricted" profile (non-root, no privilege escalation, all capabilities dropped,
  RuntimeDefault seccomp, read-only root with an emptyDir at /tmp); `automountServiceAccountToken: false`.
  No `replicas` when the autoscaler owns them.
- `v1 Service` (ClusterIP): `grpc` and `metrics` ports.
- `autoscaling/v2 HorizontalPodAutoscaler` (only with `binding.autoscaling`): CPU utilisation target and
  explicit scale-up / scale-down behaviour.
- `policy/v1 PodDisruptionBudget`: `maxUnavailable: 1` (a single replica never blocks node drains forever).

Every object carries `modelloop.io/controller: <options.owner>` when an owner is set (the chart's controller
sets its own name): the controller finds and prunes only the objects it made, even beside another release's.

The prediction-log URL holds a password: it is read from the Secret `prediction_log_secret` (key `url`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..bindings import Binding

Manifest = dict[str, Any]

FIELD_MANAGER = "modelloop-controller"
MODEL_ANNOTATION = "modelloop.io/model"
VERSION_ANNOTATION = "modelloop.io/model-version"
CHALLENGER_ANNOTATION = "modelloop.io/challenger-version"
BINDING_LABEL = "modelloop.io/binding"
CONTROLLER_LABEL = "modelloop.io/controller"  # the controller that owns the objects (and prunes them)


@dataclass(frozen=True)
class ServingOptions:
    """How scoring pods run; the same for every binding of one controller."""

    tracking_uri: str = "http://modelloop-mlflow:5000"
    prediction_log_secret: str | None = None  # Secret with key `url`; None: no prediction log
    grpc_port: int = 8081
    metrics_port: int = 9090
    drain_seconds: int = 20  # the server's graceful-shutdown drain
    pre_stop_seconds: int = 5  # endpoints are removed before the server starts draining
    min_ready_seconds: int = 10
    progress_deadline_seconds: int = 300
    run_as_user: int = 10001
    image_pull_policy: str = "IfNotPresent"
    owner: str = ""  # the owning controller's name (label CONTROLLER_LABEL); "" adds no label


def object_name(binding: Binding) -> str:
    """Name of every object of a binding."""
    return f"modelloop-{binding.name}"


def selector_labels(binding: Binding) -> dict[str, str]:
    return {"app.kubernetes.io/name": "modelloop-scoring", "app.kubernetes.io/instance": binding.name}


def common_labels(binding: Binding) -> dict[str, str]:
    return {
        **selector_labels(binding),
        "app.kubernetes.io/component": "scoring",
        "app.kubernetes.io/part-of": "modelloop",
        "app.kubernetes.io/managed-by": FIELD_MANAGER,
        BINDING_LABEL: binding.name,
    }


def _metadata(binding: Binding, opts: ServingOptions) -> dict[str, Any]:
    labels = common_labels(binding)
    if opts.owner:
        labels[CONTROLLER_LABEL] = opts.owner
    return {"name": object_name(binding), "namespace": binding.namespace, "labels": labels}


#: the multipliers of a CPU quantity's suffix (Kubernetes quantities; CPU limits are cores or millicores)
_CPU_SUFFIXES = {"m": 1e-3, "": 1.0, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
                 "Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30, "Ti": 2.0**40}  # fmt: skip


def workers_for_cpu(quantity: str) -> int:
    """Worker processes for a CPU limit: its cores rounded up, at least 1 (500m: 1, 1.5: 2, 4: 4)."""
    number = quantity.rstrip("mkMGTi")
    cores = float(number) * _CPU_SUFFIXES[quantity[len(number) :]]
    return max(1, math.ceil(round(cores, 6)))


def _serve_args(
    binding: Binding, version: str, challenger_version: str | None, opts: ServingOptions
) -> list[str]:
    args = ["serve", "--model", f"{binding.model}/{version}"]
    if challenger_version is not None and binding.challenger is not None:
        args += [
            "--challenger",
            f"{binding.model}/{challenger_version}",
            "--challenger-mode",
            binding.challenger.mode,
        ]
        if binding.challenger.mode == "canary":
            args += ["--canary-share", str(binding.challenger.share)]
    args += [
        "--host",
        "0.0.0.0",  # noqa: S104 - inside the pod
        "--port",
        str(opts.grpc_port),
        "--metrics-port",
        str(opts.metrics_port),
        "--tracking-uri",
        opts.tracking_uri,
        # MLflow down when the pod starts (a restart of MLflow, a cluster coming up): keep trying, health
        # NOT_SERVING, instead of crash-looping; the startup probe bounds the wait
        "--wait-for-registry",
    ]
    if opts.prediction_log_secret is None:
        args += ["--prediction-log-url", "none"]
    cpu_limit = binding.resources.limits.get("cpu")
    if cpu_limit is not None:  # no limit: the server counts the CPUs the pod may use
        args += ["--workers", str(workers_for_cpu(str(cpu_limit)))]
    return args


def _container(
    binding: Binding, image: str, version: str, challenger_version: str | None, opts: ServingOptions
) -> dict[str, Any]:
    env: list[dict[str, Any]] = [{"name": "OMP_NUM_THREADS", "value": "1"}]
    if opts.prediction_log_secret is not None:
        env.append(
            {
                "name": "MODELLOOP_PREDICTION_LOG_URL",
                "valueFrom": {"secretKeyRef": {"name": opts.prediction_log_secret, "key": "url"}},
            }
        )
    probe = {"grpc": {"port": opts.grpc_port}}
    resources: dict[str, Any] = {"requests": dict(binding.resources.requests)}
    if binding.resources.limits:
        resources["limits"] = dict(binding.resources.limits)
    return {
        "name": "scoring",
        "image": image,
        "imagePullPolicy": opts.image_pull_policy,
        "command": ["python", "-m", "modelloop"],
        "args": _serve_args(binding, version, challenger_version, opts),
        "env": env,
        "ports": [
            {"name": "grpc", "containerPort": opts.grpc_port, "protocol": "TCP"},
            {"name": "metrics", "containerPort": opts.metrics_port, "protocol": "TCP"},
        ],
        # 1 s x 300 = 300 s to load the models, waiting for MLflow meanwhile (--wait-for-registry): enough for
        # an MLflow restart and a large download; a pod that cannot start by then is restarted (with the
        # kubelet's back-off) and the rollout fails visibly while the old pods keep serving
        # (maxUnavailable 0).
        # Probed every second (a health check is cheap) so a pod is Ready within a second of serving: with 5 s
        # a 2-replica rollout waited up to 10 s on probe ticks alone (bench/deploy.py)
        "startupProbe": {**probe, "periodSeconds": 1, "failureThreshold": 300},
        "readinessProbe": {**probe, "periodSeconds": 5, "failureThreshold": 2},
        "livenessProbe": {**probe, "periodSeconds": 10, "failureThreshold": 3},
        "lifecycle": {"preStop": {"sleep": {"seconds": opts.pre_stop_seconds}}},
        "resources": resources,
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],  # noqa: S108 - an emptyDir
    }


def render_deployment(
    binding: Binding,
    *,
    image: str,
    version: str,
    challenger_version: str | None = None,
    options: ServingOptions,
) -> Manifest:
    opts = options
    annotations = {MODEL_ANNOTATION: binding.model, VERSION_ANNOTATION: version}
    if challenger_version is not None:
        annotations[CHALLENGER_ANNOTATION] = challenger_version
    spec: dict[str, Any] = {
        "selector": {"matchLabels": selector_labels(binding)},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
        "minReadySeconds": opts.min_ready_seconds,
        "progressDeadlineSeconds": opts.progress_deadline_seconds,
        "revisionHistoryLimit": 10,
        "template": {
            "metadata": {"labels": common_labels(binding), "annotations": annotations},
            "spec": {
                "automountServiceAccountToken": False,
                "enableServiceLinks": False,
                "terminationGracePeriodSeconds": opts.pre_stop_seconds + opts.drain_seconds + 10,
                "securityContext": {
                    "runAsNonRoot": True,
                    "runAsUser": opts.run_as_user,
                    "runAsGroup": opts.run_as_user,
                    "fsGroup": opts.run_as_user,
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                "containers": [_container(binding, image, version, challenger_version, opts)],
                "volumes": [{"name": "tmp", "emptyDir": {}}],
            },
        },
    }
    if binding.autoscaling is None:
        spec["replicas"] = binding.replicas
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {**_metadata(binding, opts), "annotations": annotations},
        "spec": spec,
    }


def render_service(binding: Binding, *, options: ServingOptions) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(binding, options),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(binding),
            "ports": [
                {
                    "name": "grpc",
                    "port": options.grpc_port,
                    "targetPort": "grpc",
                    "appProtocol": "kubernetes.io/h2c",
                },
                {"name": "metrics", "port": options.metrics_port, "targetPort": "metrics"},
            ],
        },
    }


def render_hpa(binding: Binding, options: ServingOptions) -> Manifest | None:
    if binding.autoscaling is None:
        return None
    scaling = binding.autoscaling
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(binding, options),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": object_name(binding)},
            "minReplicas": scaling.min,
            "maxReplicas": scaling.max,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": scaling.cpu_target},
                    },
                }
            ],
            "behavior": {
                "scaleUp": {
                    "stabilizationWindowSeconds": 0,
                    "selectPolicy": "Max",
                    "policies": [
                        {"type": "Percent", "value": 100, "periodSeconds": 30},
                        {"type": "Pods", "value": 2, "periodSeconds": 30},
                    ],
                },
                "scaleDown": {
                    "stabilizationWindowSeconds": 300,
                    "selectPolicy": "Min",
                    "policies": [{"type": "Percent", "value": 50, "periodSeconds": 60}],
                },
            },
        },
    }


def render_pdb(binding: Binding, options: ServingOptions) -> Manifest:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(binding, options),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector_labels(binding)}},
    }


def render_binding(
    binding: Binding,
    *,
    image: str,
    version: str,
    challenger_version: str | None = None,
    options: ServingOptions | None = None,
) -> list[Manifest]:
    """Every object serving `binding` at `version` (see the module docstring), in apply order."""
    opts = options or ServingOptions()
    objects = [
        render_deployment(
            binding, image=image, version=version, challenger_version=challenger_version, options=opts
        ),
        render_service(binding, options=opts),
    ]
    hpa = render_hpa(binding, opts)
    if hpa is not None:
        objects.append(hpa)
    objects.append(render_pdb(binding, opts))
    return objects


__all__ = [
    "BINDING_LABEL",
    "CHALLENGER_ANNOTATION",
    "CONTROLLER_LABEL",
    "FIELD_MANAGER",
    "MODEL_ANNOTATION",
    "VERSION_ANNOTATION",
    "Manifest",
    "ServingOptions",
    "common_labels",
    "object_name",
    "render_binding",
    "selector_labels",
    "workers_for_cpu",
]
