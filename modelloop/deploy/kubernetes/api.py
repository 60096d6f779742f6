"""The Kubernetes API boundary: the few calls the target and the leader elector make, as a port, and its
implementation over the official client's DynamicClient (server-side apply under `FIELD_MANAGER`).

Every call is namespaced: the controller's Role (helm/modelloop/templates/controller.yaml) grants rights in
the namespaces it manages, never cluster-wide, so a call without a namespace is refused here
(`PermanentError`) before it reaches the API server. Tests replace `KubeApi` with a fake that records calls
and plays back statuses; nothing above this module knows the `kubernetes` package. Errors: `TemporaryError`
when the API server cannot be reached or answers 5xx/429, `ConflictError` on a 409 (optimistic concurrency),
`PermanentError` on other refusals.

Credentials are found one way for every caller here (the target, the leader elector, the retraining-Job
launcher in `retrain_job`): `api_client`, the in-cluster service account, else the kubeconfig.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Protocol

from modelloop.contract.errors import ConfigError

from ..errors import PermanentError, TemporaryError
from .manifests import FIELD_MANAGER, Manifest

log = logging.getLogger(__name__)


class ConflictError(PermanentError):
    """The object changed since it was read (or already exists)."""


class KubeApi(Protocol):
    def apply(self, obj: Manifest) -> Manifest:
        """Server-side apply `obj` under the controller's field manager (forcing conflicts)."""
        ...

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> Manifest | None: ...

    def list(self, api_version: str, kind: str, namespace: str, *, label_selector: str) -> list[Manifest]:
        """Objects in `namespace` matching the selector (never a cluster-wide list)."""
        ...

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        """Delete; a missing object is no error."""
        ...

    def create(self, obj: Manifest) -> Manifest:
        """Create; `ConflictError` when it exists."""
        ...

    def replace(self, obj: Manifest) -> Manifest:
        """Replace at `metadata.resourceVersion`; `ConflictError` when it changed."""
        ...


def api_client(
    *, kubeconfig: str | Path | None = None, context: str | None = None, purpose: str = "the controller"
) -> Any:
    """A `kubernetes.client.ApiClient` with the in-cluster service account, else the kubeconfig (`kubeconfig`,
    default: the client's own, $KUBECONFIG or ~/.kube/config; `context`, default: its current one). Its
    configuration is its own (the client's global default is left alone). `ConfigError` when there are no
    credentials, naming `purpose` (what they were wanted for)."""
    from kubernetes import client, config

    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except config.ConfigException:
        try:
            config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=str(kubeconfig) if kubeconfig else None,
                context=context,
                client_configuration=configuration,
            )
        except (config.ConfigException, OSError):
            raise ConfigError(
                f"no Kubernetes credentials for {purpose}: not running in a cluster and no usable kubeconfig"
            ) from None
    return client.ApiClient(configuration)


class DynamicKubeApi:
    """`KubeApi` over `kubernetes.dynamic.DynamicClient`, with the credentials `api_client` finds."""

    def __init__(self, *, kubeconfig: str | None = None, context: str | None = None) -> None:
        from kubernetes import dynamic

        api = api_client(kubeconfig=kubeconfig, context=context)
        self._dyn = dynamic.DynamicClient(api)  # type: ignore[no-untyped-call]

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return fn(*args, **kwargs)
        except ApiException as exc:
            status = int(exc.status or 0)
            if status == 404:
                return None
            if status == 409:
                raise ConflictError(f"{what}: conflict") from None
            if status == 429 or status >= 500 or status == 0:
                raise TemporaryError(f"{what}: Kubernetes API answered {status}", delay=5.0) from None
            raise PermanentError(f"{what}: Kubernetes API refused ({status} {exc.reason})") from None
        except (HTTPError, OSError) as exc:
            raise TemporaryError(
                f"{what}: Kubernetes API unreachable ({type(exc).__name__})", delay=5.0
            ) from None

    @staticmethod
    def _namespace(what: str, namespace: str | None) -> str:
        """`namespace`, or `PermanentError`: without one the client would make a cluster-wide call."""
        if not namespace:
            raise PermanentError(f"{what}: no namespace given (cluster-wide calls are not allowed)")
        return namespace

    def _resource(self, api_version: str, kind: str) -> Any:
        return self._call(f"discover {kind}", self._dyn.resources.get, api_version=api_version, kind=kind)

    @staticmethod
    def _dict(obj: Any) -> Manifest | None:
        return None if obj is None else dict(obj.to_dict())

    def _write(self, verb: str, obj: Manifest, method: str, **kwargs: Any) -> Manifest:
        """One write of a whole object with the dynamic client's `method` (`verb` names it in errors), in the
        object's own namespace (checked before anything is called)."""
        meta = obj["metadata"]
        what = f"{verb} {obj['kind']} {meta['name']}"
        namespace = self._namespace(what, meta.get("namespace"))
        res = self._resource(obj["apiVersion"], obj["kind"])
        call = getattr(self._dyn, method)
        return self._dict(self._call(what, call, res, body=obj, namespace=namespace, **kwargs)) or {}

    def apply(self, obj: Manifest) -> Manifest:
        return self._write(
            "apply",
            obj,
            "server_side_apply",
            name=obj["metadata"]["name"],
            field_manager=FIELD_MANAGER,
            force_conflicts=True,
        )

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> Manifest | None:
        what = f"get {kind} {name}"
        namespace = self._namespace(what, namespace)
        res = self._resource(api_version, kind)
        return self._dict(self._call(what, self._dyn.get, res, name=name, namespace=namespace))

    def list(self, api_version: str, kind: str, namespace: str, *, label_selector: str) -> list[Manifest]:
        what = f"list {kind} in {namespace}"
        namespace = self._namespace(what, namespace)
        res = self._resource(api_version, kind)
        out = self._call(what, self._dyn.get, res, namespace=namespace, label_selector=label_selector)
        return [] if out is None else [dict(item) for item in out.to_dict().get("items", [])]

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        what = f"delete {kind} {name}"
        namespace = self._namespace(what, namespace)
        res = self._resource(api_version, kind)
        self._call(what, self._dyn.delete, res, name=name, namespace=namespace)

    def create(self, obj: Manifest) -> Manifest:
        return self._write("create", obj, "create")

    def replace(self, obj: Manifest) -> Manifest:
        return self._write("replace", obj, "replace", name=obj["metadata"]["name"])


__all__ = ["ConflictError", "DynamicKubeApi", "KubeApi", "api_client"]
