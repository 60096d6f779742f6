"""Test infrastructure, not part of modelloop: a node stand-in for a control plane that has no kubelet.

`NodeStandIn` registers a Node, heartbeats its Lease in `kube-node-lease`, and does for every Pod the
scheduler binds to it what a kubelet does, with local processes instead of containers:

- runs init containers in order, then each container's `command` + `args` (`$(VAR)` expanded) as a process
  from this project's environment (the image is this project: `python` is the test interpreter, other
  commands are looked up in the virtualenv's `bin` first); the image itself is not pulled or checked;
- gives it the container's env: `value`, `valueFrom` (Secrets, ConfigMaps, the downward API's fieldRef) and
  `envFrom`, read from the API server, plus PATH, HOME and HOSTNAME; nothing from the test process leaks in;
- materialises `emptyDir`, `configMap` and `secret` volumes in a folder per pod and rewrites mount paths in
  args and env values to it (TMPDIR follows a volume mounted at /tmp);
- maps every containerPort to a free loopback port (args and env values equal to the port are rewritten, and
  `0.0.0.0` becomes `127.0.0.1`): nothing listens beyond 127.0.0.1. The Pod gets an address of a private
  range (10.244.0.0/16) that only `address()` and the kube-proxy stand-in (`tests.kube.proxy`) translate;
- mounts the ServiceAccount token the way it can: a pod that would get the token gets `KUBECONFIG`, a
  kubeconfig holding a bound TokenRequest token of its ServiceAccount (what `load_incluster_config` would
  read is not available to a plain process; clients that fall back to the kubeconfig get the same identity);
- runs startup, readiness and liveness probes (gRPC health, httpGet, tcpSocket, exec) with their periods and
  thresholds, restarts on liveness failure and on exit per `restartPolicy` with the kubelet's back-off
  (immediately, then `backoff`, doubling, capped at `max_backoff`; `CrashLoopBackOff` while waiting), and
  writes Pod status like a kubelet (phase, Initialized/ContainersReady/Ready conditions, container states,
  restart counts, podIP);
- on deletion runs the preStop hook (`sleep`, `exec`, `httpGet`), sends SIGTERM, waits the grace period,
  SIGKILLs, and removes the Pod (grace 0, uid precondition).

What it does not do: images, resource limits and requests (nothing is enforced), user ids and security
contexts (processes run as the test's user), network isolation, NetworkPolicies, volumes other than the
three above, ephemeral containers, eviction under pressure, node-status images, and cgroups. Logs of each
container go to `<work_dir>/<namespace>_<pod>/<container>.log`.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config

log = logging.getLogger(__name__)

Manifest = dict[str, Any]
VENV_BIN = Path(sys.executable).parent


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def micro_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Kube:
    """The few raw API calls the stand-in makes, as plain dicts."""

    def __init__(self, kubeconfig: Path) -> None:
        self.kubeconfig = kubeconfig
        self.client = config.new_client_from_config(config_file=str(kubeconfig))
        self.core = client.CoreV1Api(self.client)
        self.coordination = client.CoordinationV1Api(self.client)

    def raw(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        response = fn(*args, _preload_content=False, **kwargs)
        return json.loads(response.data or b"null")

    def server(self) -> tuple[str, str]:
        """(API server URL, CA certificate as base64) of the kubeconfig."""
        doc = yaml.safe_load(self.kubeconfig.read_text())
        cluster = doc["clusters"][0]["cluster"]
        return cluster["server"], cluster["certificate-authority-data"]


# ------------------------------------------------------------------------------------------------ probes


@dataclass
class Probe:
    spec: Manifest
    successes: int = 0
    failures: int = 0
    next_at: float = 0.0
    passed: bool = False

    def due(self, now: float) -> bool:
        return now >= self.next_at

    def record(self, ok: bool, now: float) -> None:
        self.next_at = now + float(self.spec.get("periodSeconds", 10))
        if ok:
            self.successes, self.failures = self.successes + 1, 0
            if self.successes >= int(self.spec.get("successThreshold", 1)):
                self.passed = True
        else:
            self.failures, self.successes = self.failures + 1, 0
            if self.failures >= int(self.spec.get("failureThreshold", 3)):
                self.passed = False


def run_probe(spec: Manifest, port_of: Callable[[Any], int], env: dict[str, str]) -> bool:
    timeout = float(spec.get("timeoutSeconds", 1))
    try:
        if "grpc" in spec:
            import grpc
            from grpc_health.v1 import health_pb2, health_pb2_grpc

            with grpc.insecure_channel(f"127.0.0.1:{port_of(spec['grpc']['port'])}") as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                answer = stub.Check(
                    health_pb2.HealthCheckRequest(service=spec["grpc"].get("service", "")), timeout=timeout
                )
                return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)
        if "httpGet" in spec:
            get = spec["httpGet"]
            url = f"http://127.0.0.1:{port_of(get['port'])}{get.get('path', '/')}"
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                return 200 <= int(resp.status) < 400
        if "tcpSocket" in spec:
            with socket.create_connection(("127.0.0.1", port_of(spec["tcpSocket"]["port"])), timeout=timeout):
                return True
        if "exec" in spec:
            done = subprocess.run(
                spec["exec"]["command"], env=env, capture_output=True, timeout=timeout, check=False
            )
            return done.returncode == 0
    except Exception:
        return False
    return False


# -------------------------------------------------------------------------------------------- containers


@dataclass
class Container:
    spec: Manifest
    init: bool = False
    proc: subprocess.Popen[bytes] | None = None
    started_at: str | None = None
    restarts: int = 0
    last_exit: Manifest | None = None
    waiting: tuple[str, str] | None = ("ContainerCreating", "")
    restart_at: float = 0.0
    done: bool = False  # exited and will not be restarted
    exit_code: int | None = None
    startup: Probe | None = None
    readiness: Probe | None = None
    liveness: Probe | None = None
    run_since: float = 0.0

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    def reset_probes(self, now: float) -> None:
        delay = {k: float((self.spec.get(k) or {}).get("initialDelaySeconds", 0)) for k in PROBES}
        self.startup = (
            Probe(self.spec["startupProbe"], next_at=now + delay["startupProbe"])
            if "startupProbe" in self.spec
            else None
        )
        self.readiness = (
            Probe(self.spec["readinessProbe"], next_at=now + delay["readinessProbe"])
            if "readinessProbe" in self.spec
            else None
        )
        self.liveness = (
            Probe(self.spec["livenessProbe"], next_at=now + delay["livenessProbe"])
            if "livenessProbe" in self.spec
            else None
        )

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def started(self) -> bool:
        return self.running and (self.startup is None or self.startup.passed)

    @property
    def ready(self) -> bool:
        if not self.started:
            return False
        return self.readiness is None or self.readiness.passed


PROBES = ("startupProbe", "readinessProbe", "livenessProbe")


# ------------------------------------------------------------------------------------------------- pods


@dataclass
class PodRun:
    """One pod bound to the stand-in, and the thread that runs it."""

    node: NodeStandIn
    pod: Manifest
    ip: str
    folder: Path
    ports: dict[int, int] = field(default_factory=dict)  # containerPort -> loopback port
    named: dict[str, int] = field(default_factory=dict)  # port name -> containerPort
    containers: list[Container] = field(default_factory=list)
    inits: list[Container] = field(default_factory=list)
    deleting: threading.Event = field(default_factory=threading.Event)
    vanished: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    phase: str = "Pending"
    last_status: Manifest | None = None
    mounts: list[tuple[str, Path]] = field(default_factory=list)
    base_env: dict[str, str] = field(default_factory=dict)
    started_at: str = field(default_factory=now_iso)

    @property
    def namespace(self) -> str:
        return str(self.pod["metadata"]["namespace"])

    @property
    def name(self) -> str:
        return str(self.pod["metadata"]["name"])

    @property
    def uid(self) -> str:
        return str(self.pod["metadata"]["uid"])

    @property
    def spec(self) -> Manifest:
        return dict(self.pod["spec"])

    # -------------------------------------------------------------------------------- preparing the pod

    def prepare(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        volumes = {v["name"]: v for v in self.spec.get("volumes") or []}
        made: dict[str, Path] = {}
        for name, volume in volumes.items():
            target = self.folder / "volumes" / name
            target.mkdir(parents=True, exist_ok=True)
            if "configMap" in volume or "secret" in volume:
                self._fill(volume, target)
            elif "projected" in volume:
                self._project(volume["projected"], target)
            elif "emptyDir" not in volume:
                raise RuntimeError(
                    f"volume {name}: the node stand-in only has emptyDir, configMap, secret and projected"
                )
            made[name] = target
        for spec in (self.spec.get("initContainers") or []) + self.spec["containers"]:
            for port in spec.get("ports") or []:
                self.ports.setdefault(int(port["containerPort"]), free_port())
                if "name" in port:
                    self.named[port["name"]] = int(port["containerPort"])
            for mount in spec.get("volumeMounts") or []:
                local = made[mount["name"]] / mount.get("subPath", "")
                self.mounts.append((mount["mountPath"].rstrip("/"), local))
        self.mounts.sort(key=lambda m: -len(m[0]))
        home = self.folder / "home"
        home.mkdir(exist_ok=True)
        self.base_env = {
            "PATH": f"{VENV_BIN}:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(home),
            "HOSTNAME": self.name,
            "LANG": "C.UTF-8",
        }
        for path, local in self.mounts:
            if path == "/tmp":
                self.base_env["TMPDIR"] = str(local)
        kubeconfig = self._service_account_kubeconfig()
        if kubeconfig is not None:
            self.base_env["KUBECONFIG"] = str(kubeconfig)
        self.inits = [Container(c, init=True) for c in self.spec.get("initContainers") or []]
        self.containers = [Container(c) for c in self.spec["containers"]]

    def _fill(self, volume: Manifest, target: Path) -> None:
        kube = self.node.kube
        if "configMap" in volume:
            src = volume["configMap"]
            obj = kube.raw(kube.core.read_namespaced_config_map, src["name"], self.namespace)
            data = {k: v.encode() for k, v in (obj.get("data") or {}).items()}
            data |= {k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()}
        else:
            src = volume["secret"]
            obj = kube.raw(kube.core.read_namespaced_secret, src["secretName"], self.namespace)
            data = {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
        items = src.get("items") or [{"key": k, "path": k} for k in data]
        for item in items:
            path = target / item["path"]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data[item["key"]])

    def _project(self, projected: Manifest, target: Path) -> None:
        for source in projected.get("sources") or []:
            if "serviceAccountToken" in source:
                src = source["serviceAccountToken"]
                (target / src["path"]).write_text(self._token(int(src.get("expirationSeconds", 3600))))
            elif "downwardAPI" in source:
                for item in source["downwardAPI"].get("items") or []:
                    (target / item["path"]).write_text(self._field(item["fieldRef"]["fieldPath"]))
            elif "configMap" in source or "secret" in source:
                kind = "configMap" if "configMap" in source else "secret"
                ref = dict(source[kind])
                if kind == "secret":
                    ref["secretName"] = ref.pop("name")
                self._fill({kind: ref}, target)

    def _token(self, seconds: int = 3600) -> str:
        kube = self.node.kube
        account = self.spec.get("serviceAccountName") or "default"
        request = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "expirationSeconds": max(seconds, 600),
                "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": self.name, "uid": self.uid},
            },
        }
        answer = kube.raw(kube.core.create_namespaced_service_account_token, account, self.namespace, request)
        return str(answer["status"]["token"])

    def _service_account_kubeconfig(self) -> Path | None:
        kube = self.node.kube
        account = self.spec.get("serviceAccountName") or "default"
        mount = self.spec.get("automountServiceAccountToken")
        if mount is None:
            sa = kube.raw(kube.core.read_namespaced_service_account, account, self.namespace)
            mount = sa.get("automountServiceAccountToken", True)
        if not mount:
            return None
        return write_token_kubeconfig(
            self.folder / "kubeconfig", kube, self._token(), namespace=self.namespace
        )

    # ----------------------------------------------------------------------------------------- env

    def _rewrite(self, text: str) -> str:
        for path, local in self.mounts:
            if text == path or text.startswith(path + "/"):
                return str(local) + text[len(path) :]
        for port, mapped in self.ports.items():
            if text == str(port):
                return str(mapped)
            if text.endswith(f"={port}") or text.endswith(f":{port}"):
                return text[: -len(str(port))] + str(mapped)
        return "127.0.0.1" if text == "0.0.0.0" else text

    def _field(self, path: str) -> str:
        meta = self.pod["metadata"]
        match = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
        if match:
            return str((meta.get(match.group(1)) or {}).get(match.group(2), ""))
        return {
            "metadata.name": self.name,
            "metadata.namespace": self.namespace,
            "metadata.uid": self.uid,
            "spec.nodeName": self.node.name,
            "spec.serviceAccountName": self.spec.get("serviceAccountName", "default"),
            "status.hostIP": "127.0.0.1",
            "status.podIP": self.ip,
            "status.podIPs": self.ip,
        }[path]

    def _lookup(self, kind: str, name: str, key: str | None, optional: bool) -> dict[str, str] | None:
        kube = self.node.kube
        try:
            if kind == "secret":
                obj = kube.raw(kube.core.read_namespaced_secret, name, self.namespace)
                data = {k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()}
            else:
                obj = kube.raw(kube.core.read_namespaced_config_map, name, self.namespace)
                data = dict(obj.get("data") or {})
        except client.ApiException as exc:
            if exc.status == 404 and optional:
                return None
            raise RuntimeError(f"{kind} {name} not found") from None
        if key is not None and key not in data:
            if optional:
                return None
            raise RuntimeError(f"{kind} {name} has no key {key}")
        return data

    def env_of(self, spec: Manifest) -> dict[str, str]:
        """The container's environment: the stand-in's own (PATH, HOME, ...) and the spec's, rewritten."""
        env: dict[str, str] = {}
        for source in spec.get("envFrom") or []:
            kind = "secret" if "secretRef" in source else "configmap"
            ref = source.get("secretRef") or source.get("configMapRef")
            data = self._lookup(kind, ref["name"], None, bool(ref.get("optional")))
            for k, v in (data or {}).items():
                env[source.get("prefix", "") + k] = v
        for item in spec.get("env") or []:
            if "valueFrom" not in item:
                env[item["name"]] = expand(str(item.get("value", "")), {**self.base_env, **env})
                continue
            ref = item["valueFrom"]
            if "fieldRef" in ref:
                env[item["name"]] = self._field(ref["fieldRef"]["fieldPath"])
            elif "secretKeyRef" in ref or "configMapKeyRef" in ref:
                kind = "secret" if "secretKeyRef" in ref else "configmap"
                key_ref = ref.get("secretKeyRef") or ref["configMapKeyRef"]
                data = self._lookup(kind, key_ref["name"], key_ref["key"], bool(key_ref.get("optional")))
                if data is not None:
                    env[item["name"]] = data[key_ref["key"]]
            else:
                env[item["name"]] = ""  # resourceFieldRef: no resources here
        return {**self.base_env, **{k: self._rewrite(v) for k, v in env.items()}}

    def command_of(self, spec: Manifest, env: dict[str, str]) -> list[str]:
        command = [expand(str(a), env) for a in spec.get("command") or []]
        args = [expand(str(a), env) for a in spec.get("args") or []]
        if not command:
            raise RuntimeError(f"container {spec['name']}: the node stand-in needs an explicit command")
        head = command[0]
        if head in {"python", "python3"}:
            command[0] = sys.executable
        elif "/" not in head:
            found = shutil.which(head, path=env["PATH"])
            if found is None:
                raise RuntimeError(f"container {spec['name']}: {head} not found in the project's environment")
            command[0] = found
        return [command[0]] + [self._rewrite(a) for a in command[1:] + args]

    # ------------------------------------------------------------------------------------- processes

    def _start(self, c: Container) -> None:
        env = self.env_of(c.spec)
        argv = self.command_of(c.spec, env)
        work = c.spec.get("workingDir")
        cwd = self._rewrite(work) if work else str(self.folder)
        Path(cwd).mkdir(parents=True, exist_ok=True)
        logfile = open(self.folder / f"{c.name}.log", "ab")  # noqa: SIM115 - owned by the process
        logfile.write(f"--- {now_iso()} start: {shlex.join(argv)}\n".encode())
        logfile.flush()
        c.proc = subprocess.Popen(
            argv, env=env, cwd=cwd, stdout=logfile, stderr=subprocess.STDOUT, start_new_session=True
        )
        logfile.close()
        c.started_at, c.waiting, c.run_since = now_iso(), None, time.monotonic()
        c.reset_probes(time.monotonic())

    def _fail_start(self, c: Container, exc: Exception) -> None:
        c.waiting = ("CreateContainerConfigError", str(exc)[:200])
        c.restart_at = time.monotonic() + 2.0

    def _signal(self, c: Container, sig: int) -> None:
        if c.proc is not None and c.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(c.proc.pid, sig)

    def _stop(self, c: Container, grace: float) -> None:
        if c.proc is None:
            return
        self._signal(c, signal.SIGTERM)
        try:
            c.proc.wait(timeout=max(grace, 0.1))
        except subprocess.TimeoutExpired:
            self._signal(c, signal.SIGKILL)
            c.proc.wait(timeout=10)
        # whatever the process left in its group goes too
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(c.proc.pid, signal.SIGKILL)

    def _exited(self, c: Container, policy: str, now: float) -> None:
        assert c.proc is not None
        code = int(c.proc.returncode)
        c.last_exit = {
            "exitCode": code,
            "reason": "Completed" if code == 0 else "Error",
            "startedAt": c.started_at,
            "finishedAt": now_iso(),
        }
        c.exit_code = code
        c.proc = None
        restart = policy == "Always" or (policy == "OnFailure" and code != 0)
        if c.init and code == 0:
            c.done = True
            return
        if not restart:
            c.done = True
            return
        c.restarts += 1
        delay = (
            0.0 if c.restarts == 1 else min(self.node.backoff * 2 ** (c.restarts - 2), self.node.max_backoff)
        )
        c.restart_at = now + delay
        c.waiting = (
            (
                "CrashLoopBackOff",
                f"back-off {delay:.0f}s restarting failed container={c.name} pod={self.name}",
            )
            if delay
            else None
        )

    def _tick(self, c: Container, policy: str, now: float) -> None:
        if c.done:
            return
        if c.proc is None:
            if now >= c.restart_at:
                try:
                    self._start(c)
                except Exception as exc:
                    self._fail_start(c, exc)
            return
        if c.proc.poll() is not None:
            self._exited(c, policy, now)
            return
        env = self.base_env

        def port_of(port: Any) -> int:
            number = self.named[port] if isinstance(port, str) else int(port)
            return self.ports.get(number, number)

        if c.startup is not None and not c.startup.passed:
            if c.startup.due(now):
                c.startup.record(run_probe(c.startup.spec, port_of, env), now)
                if c.startup.failures >= int(c.startup.spec.get("failureThreshold", 3)):
                    self._kill_for_restart(c, "startup probe failed")
            return
        if c.readiness is not None and c.readiness.due(now):
            c.readiness.record(run_probe(c.readiness.spec, port_of, env), now)
        if c.liveness is not None and c.liveness.due(now):
            c.liveness.record(run_probe(c.liveness.spec, port_of, env), now)
            if c.liveness.failures >= int(c.liveness.spec.get("failureThreshold", 3)):
                self._kill_for_restart(c, "liveness probe failed")

    def _kill_for_restart(self, c: Container, why: str) -> None:
        log.info("pod %s/%s container %s: %s, restarting", self.namespace, self.name, c.name, why)
        self._stop(c, float(self.spec.get("terminationGracePeriodSeconds", 30)))

    # ------------------------------------------------------------------------------------------ status

    def _container_status(self, c: Container) -> Manifest:
        state: Manifest
        if c.running:
            state = {"running": {"startedAt": c.started_at}}
        elif c.done and c.last_exit is not None:
            state = {"terminated": c.last_exit}
        else:
            reason, message = c.waiting or ("ContainerCreating", "")
            state = {"waiting": {"reason": reason, **({"message": message} if message else {})}}
        status: Manifest = {
            "name": c.name,
            "image": c.spec.get("image", ""),
            "imageID": "",
            "ready": c.ready,
            "started": c.started,
            "restartCount": c.restarts,
            "state": state,
            "lastState": {"terminated": c.last_exit} if c.last_exit and not c.done else {},
        }
        if c.running:
            status["containerID"] = f"standin://{c.proc.pid if c.proc else 0}"
        return status

    def _status(self) -> Manifest:
        inits_done = all(c.done and c.exit_code == 0 for c in self.inits)
        ready = inits_done and all(c.ready for c in self.containers)
        phase = self.phase
        if inits_done and any(c.running for c in self.containers):
            phase = "Running"
        if all(c.done for c in self.containers) and self.containers:
            phase = "Succeeded" if all(c.exit_code == 0 for c in self.containers) else "Failed"
        if any(c.done and c.exit_code != 0 for c in self.inits):
            phase = "Failed"
        self.phase = phase

        def cond(kind: str, ok: bool) -> Manifest:
            return {"type": kind, "status": "True" if ok else "False", "lastProbeTime": None}

        return {
            "phase": phase,
            "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": self.ip,
            "podIPs": [{"ip": self.ip}],
            "startTime": self.started_at,
            "conditions": [
                cond("PodReadyToStartContainers", True),
                cond("Initialized", inits_done),
                cond("ContainersReady", ready),
                cond("Ready", ready),
                cond("PodScheduled", True),
            ],
            "initContainerStatuses": [self._container_status(c) for c in self.inits],
            "containerStatuses": [self._container_status(c) for c in self.containers],
        }

    def _write_status(self) -> None:
        status = self._status()
        if status == self.last_status:
            return
        stamped = json.loads(json.dumps(status))
        for item in stamped["conditions"]:
            old = next(
                (c for c in (self.last_status or {}).get("conditions", []) if c["type"] == item["type"]), None
            )
            item["lastTransitionTime"] = (
                old["lastTransitionTime"] if old and old["status"] == item["status"] else now_iso()
            )
        kube = self.node.kube
        try:
            kube.raw(
                kube.core.replace_namespaced_pod_status,
                self.name,
                self.namespace,
                {**self._current(), "status": stamped},
            )
            self.last_status = status
            for item, stamp in zip(status["conditions"], stamped["conditions"], strict=True):
                item["lastTransitionTime"] = stamp["lastTransitionTime"]
        except client.ApiException as exc:
            if exc.status == 404:
                self.vanished.set()
            # 409: read again next time

    def _current(self) -> Manifest:
        kube = self.node.kube
        pod: Manifest = kube.raw(kube.core.read_namespaced_pod, self.name, self.namespace)
        pod.pop("status", None)
        return pod

    # --------------------------------------------------------------------------------------- lifecycle

    def run(self) -> None:
        try:
            self.prepare()
        except Exception as exc:
            log.warning("pod %s/%s cannot start: %s", self.namespace, self.name, exc)
            self.containers = self.containers or [Container(s) for s in self.spec["containers"]]
            for c in self.containers:
                c.waiting = ("CreateContainerConfigError", str(exc)[:200])
            self._write_status()
            self.deleting.wait()
            self._terminate()
            return
        policy = self.spec.get("restartPolicy", "Always")
        while not self.deleting.is_set() and not self.vanished.is_set():
            now = time.monotonic()
            pending = [c for c in self.inits if not c.done]
            if pending:
                c = pending[0]
                self._tick(c, "OnFailure" if policy == "Always" else policy, now)
                if c.done and c.exit_code != 0:
                    for m in self.containers:
                        m.done = True
            else:
                for c in self.containers:
                    self._tick(c, policy, now)
            self._write_status()
            if self.phase in {"Succeeded", "Failed"}:
                self.deleting.wait()
                break
            self.deleting.wait(0.2)
        self._terminate()

    def _terminate(self) -> None:
        if not self.vanished.is_set():
            try:
                pod = self.node.kube.raw(self.node.kube.core.read_namespaced_pod, self.name, self.namespace)
            except client.ApiException as exc:  # deleted meanwhile (e.g. its finished Job garbage-collected)
                if exc.status != 404:
                    raise
                self.vanished.set()
        if not self.vanished.is_set():
            grace = float(
                (pod or {}).get("metadata", {}).get("deletionGracePeriodSeconds")
                or self.spec.get("terminationGracePeriodSeconds", 30)
            )
        else:
            grace = 0.0
        end = time.monotonic() + grace
        running = [c for c in self.containers + self.inits if c.running]
        if grace > 0:
            for c in running:
                self._pre_stop(c, end)
        for c in running:
            self._signal(c, signal.SIGTERM)
        for c in running:
            self._stop(c, max(0.0, end - time.monotonic()))
            c.last_exit = {
                "exitCode": int(c.proc.returncode) if c.proc else 137,
                "reason": "Completed",
                "startedAt": c.started_at,
                "finishedAt": now_iso(),
            }
            c.done, c.proc = True, None
        if self.vanished.is_set():
            return
        kube = self.node.kube
        with contextlib.suppress(client.ApiException):
            kube.core.delete_namespaced_pod(
                self.name,
                self.namespace,
                body=client.V1DeleteOptions(
                    grace_period_seconds=0, preconditions=client.V1Preconditions(uid=self.uid)
                ),
            )

    def _pre_stop(self, c: Container, end: float) -> None:
        hook = ((c.spec.get("lifecycle") or {}).get("preStop")) or {}
        if "sleep" in hook:
            time.sleep(max(0.0, min(float(hook["sleep"]["seconds"]), end - time.monotonic())))
        elif "exec" in hook:
            with contextlib.suppress(Exception):
                subprocess.run(
                    hook["exec"]["command"],
                    env=self.env_of(c.spec),
                    timeout=max(0.1, end - time.monotonic()),
                    check=False,
                    capture_output=True,
                )
        elif "httpGet" in hook:
            get = hook["httpGet"]
            port = self.ports.get(int(self.named.get(get["port"], get["port"])), 0)
            with contextlib.suppress(Exception):
                urllib.request.urlopen(
                    f"http://127.0.0.1:{port}{get.get('path', '/')}", timeout=max(0.1, end - time.monotonic())
                ).close()


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' `$(VAR)` expansion (`$$` escapes; unknown references stay as written)."""

    def sub(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)", sub, text)


def write_token_kubeconfig(path: Path, kube: Kube, token: str, *, namespace: str) -> Path:
    """A kubeconfig at `path` for the API server of `kube`, authenticating with a bearer `token`."""
    server, ca = kube.server()
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": server, "certificate-authority-data": ca}}],
                "users": [{"name": "u", "user": {"token": token}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u", "namespace": namespace}}],
                "current-context": "x",
            }
        )
    )
    path.chmod(0o600)
    return path


# ------------------------------------------------------------------------------------------------- node


class NodeStandIn:
    """A Node whose pods run as local processes (see the module docstring). Test infrastructure only."""

    def __init__(
        self,
        kubeconfig: Path,
        work_dir: Path,
        *,
        name: str = "standin-0",
        backoff: float = 10.0,
        max_backoff: float = 300.0,
        sync_every: float = 0.3,
    ) -> None:
        self.kube = Kube(kubeconfig)
        self.work_dir = work_dir
        self.name = name
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.sync_every = sync_every
        self.pods: dict[str, PodRun] = {}  # uid -> run
        self._ips = 1
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # ----------------------------------------------------------------------------------- registration

    def _node_status(self) -> Manifest:
        stamp = now_iso()
        capacity = {"cpu": "32", "memory": "128Gi", "pods": "110", "ephemeral-storage": "100Gi"}

        def condition(kind: str, status: str, reason: str) -> Manifest:
            return {
                "type": kind,
                "status": status,
                "reason": reason,
                "message": "node stand-in",
                "lastHeartbeatTime": stamp,
                "lastTransitionTime": self._since,
            }

        return {
            "capacity": capacity,
            "allocatable": capacity,
            "conditions": [
                condition("MemoryPressure", "False", "KubeletHasSufficientMemory"),
                condition("DiskPressure", "False", "KubeletHasNoDiskPressure"),
                condition("PIDPressure", "False", "KubeletHasSufficientPID"),
                condition("Ready", "True", "KubeletReady"),
            ],
            "addresses": [
                {"type": "InternalIP", "address": "127.0.0.1"},
                {"type": "Hostname", "address": self.name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
            "nodeInfo": {
                "machineID": "standin",
                "systemUUID": "standin",
                "bootID": "standin",
                "kernelVersion": os.uname().release,
                "osImage": "node stand-in (tests/kube/node.py)",
                "containerRuntimeVersion": "standin://0",
                "kubeletVersion": "v1.36.2",
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
        }

    def _heartbeat(self) -> None:
        kube = self.kube
        try:
            lease = kube.raw(kube.coordination.read_namespaced_lease, self.name, "kube-node-lease")
            lease["spec"]["renewTime"] = micro_now()
            kube.raw(kube.coordination.replace_namespaced_lease, self.name, "kube-node-lease", lease)
        except client.ApiException as exc:
            if exc.status != 404:
                raise
            node = kube.raw(kube.core.read_node, self.name)
            kube.raw(
                kube.coordination.create_namespaced_lease,
                "kube-node-lease",
                {
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {
                        "name": self.name,
                        "ownerReferences": [
                            {
                                "apiVersion": "v1",
                                "kind": "Node",
                                "name": self.name,
                                "uid": node["metadata"]["uid"],
                            }
                        ],
                    },
                    "spec": {
                        "holderIdentity": self.name,
                        "leaseDurationSeconds": 40,
                        "renewTime": micro_now(),
                    },
                },
            )

    def _post_status(self, attempts: int = 5) -> None:
        """Replace the Node's status; a 409 (the node lifecycle controller wrote the Node between our read and
        our write) is answered by reading it again, as the kubelet does."""
        kube = self.kube
        for attempt in range(attempts):
            node = kube.raw(kube.core.read_node, self.name)
            node["status"] = self._node_status()
            try:
                kube.raw(kube.core.replace_node_status, self.name, node)
                return
            except client.ApiException as exc:
                if exc.status != 409 or attempt == attempts - 1:
                    raise

    def start(self, timeout: float = 60.0) -> None:
        self._since = now_iso()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        kube = self.kube
        body = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.name,
                "labels": {
                    "kubernetes.io/hostname": self.name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                },
            },
        }
        try:
            kube.raw(kube.core.create_node, body)
        except client.ApiException as exc:
            if exc.status != 409:
                raise
        self._post_status()
        self._heartbeat()
        end = time.monotonic() + timeout
        while True:  # the node lifecycle controller lifts its not-ready taint once it sees Ready
            node = kube.raw(kube.core.read_node, self.name)
            taints = [t for t in node["spec"].get("taints") or [] if t.get("effect") == "NoSchedule"]
            if not taints:
                break
            if time.monotonic() > end:
                raise RuntimeError(f"node {self.name} still tainted: {taints}")
            time.sleep(0.5)
        for target, name in ((self._beat_loop, "standin-heartbeat"), (self._sync_loop, "standin-sync")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def _beat_loop(self) -> None:
        last_status = time.monotonic()
        while not self._stop.wait(5.0):
            try:
                self._heartbeat()
                if time.monotonic() - last_status > 30:
                    self._post_status()
                    last_status = time.monotonic()
            except Exception as exc:
                log.warning("node stand-in heartbeat failed: %s", exc)

    # -------------------------------------------------------------------------------------------- pods

    def _sync_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.sync()
            except Exception as exc:
                log.warning("node stand-in sync failed: %s", exc)
            self._stop.wait(self.sync_every)

    def sync(self) -> None:
        kube = self.kube
        listing = kube.raw(kube.core.list_pod_for_all_namespaces, field_selector=f"spec.nodeName={self.name}")
        seen = set()
        for pod in listing.get("items") or []:
            uid = pod["metadata"]["uid"]
            seen.add(uid)
            with self._lock:
                run = self.pods.get(uid)
                if run is None:
                    if pod["metadata"].get("deletionTimestamp"):
                        kube.core.delete_namespaced_pod(
                            pod["metadata"]["name"],
                            pod["metadata"]["namespace"],
                            body=client.V1DeleteOptions(grace_period_seconds=0),
                        )
                        continue
                    self._ips += 1
                    ip = f"10.244.{self._ips // 250}.{self._ips % 250 + 1}"
                    folder = self.work_dir / f"{pod['metadata']['namespace']}_{pod['metadata']['name']}"
                    run = PodRun(self, pod, ip, folder)
                    run.thread = threading.Thread(
                        target=run.run, name=f"pod-{pod['metadata']['name']}", daemon=True
                    )
                    self.pods[uid] = run
                    run.thread.start()
            if pod["metadata"].get("deletionTimestamp"):
                run.pod = pod
                run.deleting.set()
        with self._lock:
            for uid, run in list(self.pods.items()):
                if uid not in seen:
                    run.vanished.set()
                    run.deleting.set()
                if run.thread is not None and not run.thread.is_alive():
                    del self.pods[uid]

    def address(self, pod_ip: str, port: int) -> str | None:
        """Where a pod's containerPort listens on loopback, or None when no running pod has that address."""
        with self._lock:
            for run in self.pods.values():
                if run.ip == pod_ip and port in run.ports:
                    return f"127.0.0.1:{run.ports[port]}"
        return None

    def pod_address(self, namespace: str, name: str, port: int) -> str:
        with self._lock:
            for run in self.pods.values():
                if (run.namespace, run.name) == (namespace, name) and port in run.ports:
                    return f"127.0.0.1:{run.ports[port]}"
        raise LookupError(f"no pod {namespace}/{name} with port {port} on {self.name}")

    def logs(self, namespace: str, name: str, container: str) -> str:
        path = self.work_dir / f"{namespace}_{name}" / f"{container}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        """Stop every pod's processes at once (no grace: the cluster goes away with the test session)."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)
        with self._lock:
            runs = list(self.pods.values())
        for run in runs:
            run.vanished.set()
            run.deleting.set()
        for run in runs:
            if run.thread is not None:
                run.thread.join(timeout=15)
        with contextlib.suppress(Exception):
            self.kube.core.delete_node(self.name)


__all__ = ["NodeStandIn", "expand", "write_token_kubeconfig"]
