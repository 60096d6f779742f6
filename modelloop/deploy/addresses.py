"""Where a binding answers: the gRPC address recorded with each rollout (on the deployment run, the version's
tags and its description), so the MLflow UI says where a version serves.

Called by `deploy.reconcile`. A target that knows its addresses says so with an `address(name)` method
(`deploy.local.LocalTarget`: host:port of the binding's server); for the Kubernetes target it is the
binding's Service (`<object name>.<namespace>.svc:<grpc port>`, as `deploy.kubernetes.manifests` renders it).
Anything else: "" (unknown), never an error.
"""

from __future__ import annotations

import logging

from .bindings import Binding
from .kubernetes.manifests import ServingOptions, object_name
from .target import DeploymentTarget

log = logging.getLogger(__name__)


def serving_address(target: DeploymentTarget, binding: Binding) -> str:
    """The address `binding` answers on at `target`, or "" when the target does not say."""
    address = getattr(target, "address", None)
    if callable(address):
        try:
            return str(address(binding.name))
        except Exception:  # the address is a record, not a reason to fail a rollout
            log.debug("binding %s: the %s target gave no address", binding.name, binding.target)
            return ""
    options = getattr(target, "options", None)
    if binding.target == "kubernetes" and isinstance(options, ServingOptions):
        return f"{object_name(binding)}.{binding.namespace}.svc:{options.grpc_port}"
    return ""


__all__ = ["serving_address"]
