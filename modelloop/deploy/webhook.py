"""Signed MLflow webhook deliveries: the header names, the event types the controller subscribes to
(`EVENTS`, the list `deploy.webhook_registration` registers in MLflow), `sign`, and `WebhookVerifier`,
which is pure (signature, freshness, replay). The HTTP receiver that uses it is `deploy.webhook_http`;
`Event.is_own_tag_write` recognises the deliveries caused by modelloop's own tag writes.

A delivery is accepted only when `X-MLflow-Signature` equals
"v1," + base64(HMAC-SHA256(secret, f"{delivery_id}.{timestamp}.{body}")) (constant-time compare), the
timestamp is at most `max_age` seconds old (and not from the future beyond a small skew), and the delivery id
was not accepted before. Refusals raise `RejectedError` with a reason from `REFUSAL_REASONS`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from modelloop.contract.registry import is_modelloop_tag

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-MLflow-Signature"
TIMESTAMP_HEADER = "X-MLflow-Timestamp"
DELIVERY_ID_HEADER = "X-MLflow-Delivery-Id"
WEBHOOK_PATH = "/webhook"
METRICS_PATH = "/metrics"
MAX_BODY = 1 << 20

#: The registry events the controller subscribes to (and the only ones the receiver acts on).
EVENTS = (
    "model_version_alias.created",
    "model_version_alias.deleted",
    "model_version_tag.set",
    "model_version_tag.deleted",
    "model_version.created",
)

REFUSAL_REASONS = (
    "missing_headers", "bad_signature", "stale", "replay", "malformed", "bad_length", "length_required",
    "too_large", "timeout", "busy", "ignored_event",
)  # fmt: skip


class RejectedError(Exception):
    """A delivery was refused; `status` is the HTTP status to answer, `reason` its `REFUSAL_REASONS` label."""

    def __init__(self, message: str, status: int = 401, *, reason: str = "bad_signature") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Event:
    """A verified registry event."""

    entity: str
    action: str
    data: dict[str, Any]

    @property
    def type(self) -> str:
        """`entity.action`, as in `EVENTS`."""
        return f"{self.entity}.{self.action}"

    @property
    def model(self) -> str | None:
        name = self.data.get("name")
        return name if isinstance(name, str) else None

    @property
    def is_own_tag_write(self) -> bool:
        """A `modelloop.*` version tag being set: modelloop's own bookkeeping (the controller's rollout tags,
        the training's gate tags), which the controller does not act on and the receiver does not log."""
        key = self.data.get("key")
        return self.type == "model_version_tag.set" and isinstance(key, str) and is_modelloop_tag(key)


def sign(secret: str, delivery_id: str, timestamp: str, body: str) -> str:
    """The `X-MLflow-Signature` value MLflow sends for this delivery."""
    digest = hmac.new(secret.encode(), f"{delivery_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


class WebhookVerifier:
    """Checks signature, age and replay of deliveries. Thread safe."""

    def __init__(
        self,
        secret: str,
        *,
        max_age: float = 300.0,
        skew: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not secret:
            raise ValueError("webhook secret must not be empty")
        self._secret = secret
        self.max_age = max_age
        self.skew = skew
        self._clock = clock
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def verify(self, headers: dict[str, str], body: bytes) -> Event:
        """The verified event, or `RejectedError` naming the problem."""
        lower = {k.lower(): v for k, v in headers.items()}
        signature = lower.get(SIGNATURE_HEADER.lower())
        timestamp = lower.get(TIMESTAMP_HEADER.lower())
        delivery_id = lower.get(DELIVERY_ID_HEADER.lower())
        if not signature or not timestamp or not delivery_id:
            raise RejectedError(
                "missing signature, timestamp or delivery id header", reason="missing_headers"
            )
        try:
            text = body.decode("utf-8")
            sent_at = int(timestamp)
        except (UnicodeDecodeError, ValueError):
            raise RejectedError("malformed timestamp or body", 400, reason="malformed") from None
        expected = sign(self._secret, delivery_id, timestamp, text)
        if not hmac.compare_digest(expected.encode(), signature.encode()):
            raise RejectedError("bad signature", reason="bad_signature")
        now = self._clock()
        if now - sent_at > self.max_age or sent_at - now > self.skew:
            raise RejectedError("stale timestamp", reason="stale")
        with self._lock:
            self._forget(now)
            if delivery_id in self._seen:
                raise RejectedError("replayed delivery id", 409, reason="replay")
            self._seen[delivery_id] = float(sent_at)
        try:
            payload = json.loads(text)
            event = Event(str(payload["entity"]), str(payload["action"]), dict(payload.get("data") or {}))
        except (ValueError, KeyError, TypeError):
            raise RejectedError("body is not an MLflow webhook payload", 400, reason="malformed") from None
        return event

    def _forget(self, now: float) -> None:
        # ids older than the freshness window can no longer pass the timestamp check: drop them
        while self._seen:
            first, sent_at = next(iter(self._seen.items()))
            if now - sent_at <= self.max_age + self.skew:
                break
            self._seen.pop(first)


__all__ = [
    "DELIVERY_ID_HEADER",
    "EVENTS",
    "MAX_BODY",
    "METRICS_PATH",
    "REFUSAL_REASONS",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "WEBHOOK_PATH",
    "Event",
    "RejectedError",
    "WebhookVerifier",
    "sign",
]
