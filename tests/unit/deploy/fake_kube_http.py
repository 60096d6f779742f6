"""A fake Kubernetes API server over HTTP on loopback, for the calls the retraining launcher makes: create
ConfigMaps and Jobs (`generateName` honoured, uid and resourceVersion assigned, 409 when the name is taken),
and JSON-patch ConfigMaps. Everything above the HTTP boundary (the official `kubernetes` client included)
is real. Refusals are scripted per (method, resource) with the Status body a real API server sends.

Used by tests/unit/deploy/test_retrain_job.py and tests/integration/helm/test_retrain_job_chart.py."""

from __future__ import annotations

import copy
import itertools
import json
import re
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

Manifest = dict[str, Any]

_ROUTES = [
    (re.compile(r"^/api/v1/namespaces/([^/]+)/(configmaps)(?:/([^/?]+))?$"), "v1", "ConfigMap"),
    (re.compile(r"^/apis/batch/v1/namespaces/([^/]+)/(jobs)(?:/([^/?]+))?$"), "batch/v1", "Job"),
]
_REASONS = {
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    409: "AlreadyExists",
    415: "UnsupportedMediaType",
    422: "Invalid",
    500: "InternalError",
    503: "ServiceUnavailable",
}


def status_body(code: int, message: str, causes: list[dict[str, str]] | None = None) -> Manifest:
    body: Manifest = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": _REASONS.get(code, "Unknown"),
        "code": code,
    }
    if causes is not None:
        body["details"] = {"causes": causes}
    return body


def _pointer_set(doc: Manifest, path: str, value: Any) -> None:
    parts = [p.replace("~1", "/").replace("~0", "~") for p in path.lstrip("/").split("/")]
    target = doc
    for part in parts[:-1]:
        target = target.setdefault(part, {})
    target[parts[-1]] = value


class FakeKubeApiServer:
    """Context manager; `.url` for `kubernetes.client.Configuration(host=...)`; `.objects[(kind, ns, name)]`;
    `.requests` as (method, path, content type); `refuse(method, resource, code, ...)` scripts one answer."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], Manifest] = {}
        self.requests: list[tuple[str, str, str | None]] = []
        self._refusals: dict[tuple[str, str], list[tuple[int, Manifest]]] = {}
        self._counter = itertools.count(1)
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FakeKubeApiServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def refuse(
        self, method: str, resource: str, code: int, *, message: str = "refused", causes: Any = None
    ) -> None:
        """The next `method` on `resource` ("configmaps" | "jobs") answers `code` with a Status body."""
        self._refusals.setdefault((method, resource), []).append((code, status_body(code, message, causes)))

    def of_kind(self, kind: str) -> list[Manifest]:
        return [copy.deepcopy(o) for (k, _, _), o in self.objects.items() if k == kind]

    # ----- the API

    def _answer(self, method: str, path: str, content_type: str | None, body: Any) -> tuple[int, Manifest]:
        route = path.split("?", 1)[0]
        found = [(p.match(route), api_version, kind) for p, api_version, kind in _ROUTES]
        hits = [(m, api_version, kind) for m, api_version, kind in found if m is not None]
        if not hits:
            return 404, status_body(404, "the server could not find the requested resource")
        [(match, api_version, kind)] = hits
        namespace, resource, name = match.groups()
        with self._lock:
            queued = self._refusals.get((method, resource))
            if queued:
                return queued.pop(0)
            if method == "POST" and name is None:
                return self._create(api_version, kind, namespace, body)
            if method == "PATCH" and name is not None:
                return self._patch(kind, namespace, name, content_type, body)
        return 405, status_body(405, "method not allowed")

    def _create(self, api_version: str, kind: str, namespace: str, body: Any) -> tuple[int, Manifest]:
        if not isinstance(body, dict) or body.get("kind") != kind or body.get("apiVersion") != api_version:
            return 400, status_body(400, f"the body is not a {api_version} {kind}")
        meta = body.setdefault("metadata", {})
        if meta.get("namespace", namespace) != namespace:
            return 400, status_body(400, "the namespace of the object does not match the request")
        if not meta.get("name"):
            if not meta.get("generateName"):
                return 422, status_body(
                    422,
                    "name or generateName is required",
                    [{"field": "metadata.name", "reason": "FieldValueRequired"}],
                )
            meta["name"] = f"{meta['generateName']}{uuid.uuid4().hex[:5]}"
        key = (kind, namespace, meta["name"])
        if key in self.objects:
            return 409, status_body(409, f"{kind.lower()}s {meta['name']!r} already exists")
        meta.update(namespace=namespace, uid=str(uuid.uuid4()), resourceVersion=str(next(self._counter)))
        self.objects[key] = body
        return 201, copy.deepcopy(body)

    def _patch(
        self, kind: str, namespace: str, name: str, content_type: str | None, body: Any
    ) -> tuple[int, Manifest]:
        obj = self.objects.get((kind, namespace, name))
        if obj is None:
            return 404, status_body(404, f"{kind.lower()}s {name!r} not found")
        if content_type != "application/json-patch+json" or not isinstance(body, list):
            return 415, status_body(415, "this fake takes JSON patches only")
        patched = copy.deepcopy(obj)
        for op in body:
            if op.get("op") not in {"add", "replace"}:
                return 422, status_body(422, "unsupported patch op")
            _pointer_set(patched, op["path"], op["value"])
        patched["metadata"]["resourceVersion"] = str(next(self._counter))
        self.objects[(kind, namespace, name)] = patched
        return 200, copy.deepcopy(patched)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                content_type = self.headers.get("Content-Type")
                fake.requests.append((self.command, self.path, content_type))
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    code, out = 400, status_body(400, "the body is not JSON")
                else:
                    code, out = fake._answer(self.command, self.path, content_type, body)
                data = json.dumps(out).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_POST = do_PATCH = do_GET = do_PUT = do_DELETE = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


__all__ = ["FakeKubeApiServer", "status_body", "write_kubeconfig"]


def write_kubeconfig(path: Path, server: str) -> Path:
    """A kubeconfig at `path` whose only context points at `server` with a dummy token."""
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": server}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    return path
