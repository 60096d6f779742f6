"""The MLflow webhook receiver: verifies signed deliveries and hands registry events to the controller.

`WebhookVerifier` is pure (signature, freshness, replay); `WebhookServer` is a small threaded HTTP server that
answers at once (202) and calls `on_event` with the parsed event; the controller reconciles in the background.
A delivery is accepted only when `X-MLflow-Signature` equals
"v1," + base64(HMAC-SHA256(secret, f"{delivery_id}.{timestamp}.{body}")) (constant-time compare), the
timestamp is at most `max_age` seconds old (and not from the future beyond a small skew), and the delivery id
was not accepted before. Rejections change nothing and never echo the request.
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
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-MLflow-Signature"
TIMESTAMP_HEADER = "X-MLflow-Timestamp"
DELIVERY_ID_HEADER = "X-MLflow-Delivery-Id"
WEBHOOK_PATH = "/webhook"
MAX_BODY = 1 << 20

#: The registry events the controller subscribes to.
EVENTS = (
    "model_version_alias.created",
    "model_version_alias.deleted",
    "model_version_tag.set",
    "model_version_tag.deleted",
    "model_version.created",
)


class RejectedError(Exception):
    """A delivery failed verification; `status` is the HTTP status to answer."""

    def __init__(self, reason: str, status: int = 401) -> None:
        super().__init__(reason)
        self.status = status


@dataclass(frozen=True)
class Event:
    """A verified registry event."""

    entity: str
    action: str
    data: dict[str, Any]

    @property
    def model(self) -> str | None:
        name = self.data.get("name")
        return name if isinstance(name, str) else None


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
            raise RejectedError("missing signature, timestamp or delivery id header")
        try:
            text = body.decode("utf-8")
            sent_at = int(timestamp)
        except (UnicodeDecodeError, ValueError):
            raise RejectedError("malformed timestamp or body", 400) from None
        expected = sign(self._secret, delivery_id, timestamp, text)
        if not hmac.compare_digest(expected.encode(), signature.encode()):
            raise RejectedError("bad signature")
        now = self._clock()
        if now - sent_at > self.max_age or sent_at - now > self.skew:
            raise RejectedError("stale timestamp")
        with self._lock:
            self._forget(now)
            if delivery_id in self._seen:
                raise RejectedError("replayed delivery id", 409)
            self._seen[delivery_id] = float(sent_at)
        try:
            payload = json.loads(text)
            event = Event(str(payload["entity"]), str(payload["action"]), dict(payload.get("data") or {}))
        except (ValueError, KeyError, TypeError):
            raise RejectedError("body is not an MLflow webhook payload", 400) from None
        return event

    def _forget(self, now: float) -> None:
        # ids older than the freshness window can no longer pass the timestamp check: drop them
        while self._seen:
            first, sent_at = next(iter(self._seen.items()))
            if now - sent_at <= self.max_age + self.skew:
                break
            self._seen.pop(first)


class WebhookServer:
    """HTTP endpoint for MLflow webhooks at `WEBHOOK_PATH`; `port=0` binds a free port."""

    def __init__(
        self,
        verifier: WebhookVerifier,
        on_event: Callable[[Event], None],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.verifier = verifier
        self.on_event = on_event
        self.accepted = 0
        self.rejected = 0
        server_self = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length > MAX_BODY:
                    server_self.rejected += 1
                    self._answer(413, "body too large")
                    return
                body = self.rfile.read(length)
                self._answer(*server_self.handle(self.path, dict(self.headers.items()), body))

            def do_GET(self) -> None:
                self._answer(200 if self.path == "/healthz" else 404, "ok" if self.path == "/healthz" else "")

            def _answer(self, status: int, text: str) -> None:
                data = text.encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("webhook http: %s", format % args)

        self._handler = Handler
        self._httpd = ThreadingHTTPServer((host, port), Handler)
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        host = str(self._httpd.server_address[0])
        return f"http://{host}:{self.port}{WEBHOOK_PATH}"

    def handle(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, str]:
        """Verify one delivery and pass its event on; returns the HTTP status and text to answer."""
        if path.split("?", 1)[0] != WEBHOOK_PATH:
            return 404, ""
        try:
            event = self.verifier.verify(headers, body)
        except RejectedError as exc:
            self.rejected += 1
            log.warning("webhook delivery rejected: %s", exc)
            return exc.status, str(exc)
        self.accepted += 1
        log.info("webhook %s.%s for model %s", event.entity, event.action, event.model)
        try:
            self.on_event(event)
        except Exception:
            log.exception("webhook event handler failed")
        return 202, "accepted"

    def start(self) -> WebhookServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="webhook-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)


__all__ = ["EVENTS", "Event", "RejectedError", "WebhookServer", "WebhookVerifier", "sign"]
