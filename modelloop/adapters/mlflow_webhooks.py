"""MLflow's registry webhooks: create one by name, or update the one already there.

Called by `modelloop.deploy.webhook_registration`, which decides what to register (the name, the URL, the
events the controller acts on, the secret). Uses `MlflowClient.list_webhooks` / `create_webhook` /
`update_webhook` (MLflow >= 3.3; the server needs the SQL backend). `put` is idempotent: a webhook with the
same name is updated in place (URL, events, secret, status ACTIVE) instead of created twice.

Failures become the registry port's errors through `adapters.mlflow_errors`: unreachable -> UnavailableError,
refused (e.g. a file-backed server without webhook support, no permission) -> RegistryRefusedError, each
naming "registering the webhook NAME".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from modelloop.contract.errors import clip

from . import mlflow_errors
from .mlflow_registry import MlflowModelRegistry

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.webhook import Webhook

#: Webhooks read per page while looking one up by name.
PAGE = 100


@dataclass(frozen=True)
class PutWebhook:
    """The webhook `MlflowWebhooks.put` left: its id, and whether it was created (else updated)."""

    webhook_id: str
    created: bool


class MlflowWebhooks:
    """The webhooks of the registry's MLflow server."""

    def __init__(self, registry: MlflowModelRegistry) -> None:
        self._client = registry.client
        self._where = registry.where

    def put(self, name: str, *, url: str, events: Sequence[str], secret: str, description: str) -> PutWebhook:
        """Create the webhook `name`, or update the first one of that name; `events` as "entity.action"
        (e.g. "model_version_alias.created"); `description` is given to a new webhook only."""
        from mlflow.entities.webhook import WebhookEvent

        hook_events: list[Any] = [WebhookEvent(*e.split(".")) for e in events]
        try:
            existing = [w for w in self._all(self._client) if w.name == name]
            if existing:
                hook = self._client.update_webhook(
                    existing[0].webhook_id, url=url, events=hook_events, secret=secret, status="ACTIVE"
                )
            else:
                hook = self._client.create_webhook(
                    name, url, hook_events, secret=secret, description=description
                )
        except Exception as exc:
            if mlflow_errors.kind_of(exc) is None:
                raise
            doing = f"registering the webhook {clip(name)}"
            raise mlflow_errors.classify(exc, doing, where=self._where) from None
        return PutWebhook(str(hook.webhook_id), created=not existing)

    @staticmethod
    def _all(client: MlflowClient) -> list[Webhook]:
        out: list[Webhook] = []
        token = None
        while True:
            page = client.list_webhooks(max_results=PAGE, page_token=token)
            out.extend(page)
            token = page.token
            if not token:
                return out


__all__ = ["PAGE", "MlflowWebhooks", "PutWebhook"]
