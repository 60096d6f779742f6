"""Registers (or updates) the controller's webhook in MLflow for the registry events it reconciles on.

Called by `modelloop webhook register`. Idempotent: a webhook with the same name is updated in place
(URL, events, secret, status ACTIVE) instead of created twice. Uses `MlflowClient.create_webhook` /
`update_webhook` (MLflow >= 3.3; the server needs the SQL backend). The events registered are
`deploy.webhook.EVENTS`, the same list the receiver acts on: a delivery of any other type (say the webhook was
widened in the MLflow UI) is answered 202 and ignored, counted in `modelloop_webhook_refused_total{reason=
"ignored_event"}`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from modelloop.contract.errors import UnavailableError

from .webhook import EVENTS

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.webhook import Webhook

log = logging.getLogger(__name__)

WEBHOOK_NAME = "modelloop-controller"


def register_webhook(tracking_uri: str, *, url: str, secret: str, name: str = WEBHOOK_NAME) -> str:
    """Create or update the webhook; returns its id."""
    from mlflow import MlflowClient
    from mlflow.entities.webhook import WebhookEvent
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    events: list[Any] = [WebhookEvent(*e.split(".")) for e in EVENTS]
    try:
        existing: list[Webhook] = [w for w in _all_webhooks(client) if w.name == name]
        if existing:
            hook = client.update_webhook(
                existing[0].webhook_id,
                url=url,
                events=events,
                secret=secret,
                status="ACTIVE",
            )
            log.info("updated webhook %s -> %s", name, url)
        else:
            hook = client.create_webhook(
                name, url, list(events), secret=secret, description="modelloop controller"
            )
            log.info("created webhook %s -> %s", name, url)
    except MlflowException as exc:
        raise UnavailableError(
            f"could not register the webhook in MLflow at {tracking_uri}: {exc.error_code}"
        ) from None
    return str(hook.webhook_id)


def _all_webhooks(client: MlflowClient) -> list[Webhook]:
    out: list[Webhook] = []
    token = None
    while True:
        page = client.list_webhooks(max_results=100, page_token=token)
        out.extend(page)
        token = page.token
        if not token:
            return out


__all__ = ["WEBHOOK_NAME", "register_webhook"]
