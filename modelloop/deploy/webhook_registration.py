"""Registers (or updates) the controller's webhook in MLflow for the registry events it reconciles on.

Called by `modelloop webhook register` and the local platform. Decides what is registered: the webhook's
name, the receiver's URL, the secret, and the events, `deploy.webhook.EVENTS`, the same list the receiver acts
on (a delivery of any other type, say the webhook was widened in the MLflow UI, is answered 202 and ignored,
counted in `modelloop_webhook_refused_total{reason="ignored_event"}`). The MLflow calls are
`adapters.mlflow_webhooks.MlflowWebhooks.put`: idempotent (a webhook with the same name is updated in place
instead of created twice; MLflow >= 3.3 with the SQL backend), failing with UnavailableError (unreachable) or
RegistryRefusedError (refused, e.g. a file-backed server without webhook support, no permission).
"""

from __future__ import annotations

import logging

from modelloop.adapters.mlflow_registry import MlflowModelRegistry
from modelloop.adapters.mlflow_webhooks import MlflowWebhooks

from .webhook import EVENTS

log = logging.getLogger(__name__)

WEBHOOK_NAME = "modelloop-controller"
DESCRIPTION = "modelloop controller"


def register_webhook(tracking_uri: str, *, url: str, secret: str, name: str = WEBHOOK_NAME) -> str:
    """Create or update the webhook; returns its id."""
    webhooks = MlflowWebhooks(MlflowModelRegistry(tracking_uri))
    put = webhooks.put(name, url=url, events=list(EVENTS), secret=secret, description=DESCRIPTION)
    log.info("%s webhook %s -> %s", "created" if put.created else "updated", name, url)
    return put.webhook_id


__all__ = ["DESCRIPTION", "WEBHOOK_NAME", "register_webhook"]
