"""The MLflow webhook receiver: a small threaded HTTP server that verifies signed deliveries
(`deploy.webhook.WebhookVerifier`), answers at once (202) and hands registry events to `on_event`; the
controller (`deploy.controller.Controller`) reconciles in the background. Only the event types the controller
subscribes to (`EVENTS`) act; another correctly signed type is answered 202 (so MLflow does not retry it) and
ignored.

What the receiver holds for a client is bounded whatever the headers say: the body is read only up to
`max_body` bytes (`Content-Length`: 411 when missing, 400 when not a non-negative integer, 413 when over the
limit; `Transfer-Encoding: chunked` bodies are decoded up to the same limit, any other encoding is 501), the
whole request must arrive within `request_timeout` seconds of connecting (a slow or silent client is then
dropped: it cannot hold a thread longer), and at most `max_connections` are served at once (others get 503
with `Retry-After`, which MLflow retries). Refusals change nothing and never echo the request.

Metrics (prometheus-client, the receiver's own registry; the controller has no metrics endpoint of its own, so
they are served by the receiver at `GET /metrics` on the webhook port, beside `GET /healthz`):

| metric | labels | counts |
|---|---|---|
| `modelloop_webhook_accepted_total` | `event` | verified deliveries of subscribed events, acted on |
| `modelloop_webhook_refused_total` | `reason` | deliveries not acted on, by reason (`REFUSAL_REASONS`) |
| `modelloop_webhook_handler_errors_total` | | accepted events whose handler raised (logged) |

Refusal reasons: `missing_headers`, `bad_signature`, `stale` (401); `replay` (409); `malformed` (400: bad
timestamp, body not UTF-8 or not an MLflow payload); `bad_length` (400/501: `Content-Length` not a
non-negative integer or conflicting, a malformed chunked body, an unsupported `Transfer-Encoding`);
`length_required` (411); `too_large` (413); `timeout` (request not received in time, connection dropped);
`busy` (503); `ignored_event` (202: signed, but not a subscribed event type).
"""

from __future__ import annotations

import io
import logging
import socket
import string
import threading
import time
from collections.abc import Callable, Collection
from email.message import Message
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer
from .webhook import (
    EVENTS,
    MAX_BODY,
    METRICS_PATH,
    REFUSAL_REASONS,
    WEBHOOK_PATH,
    Event,
    RejectedError,
    WebhookVerifier,
)

log = logging.getLogger(__name__)

_MAX_LINE = 1024  # a chunk-size or trailer line
_MAX_TRAILERS = 32
_LINGER = 2.0  # seconds to discard what a client still sends after an early answer
_LENGTH = "bad_length"
_TEXT = "text/plain; charset=utf-8"


class WebhookMetrics:
    """The receiver's Prometheus metrics (see the module docstring), in their own registry so that several
    receivers can share a process (tests)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.accepted = Counter(
            "modelloop_webhook_accepted", "Verified webhook deliveries of subscribed events, acted on.",
            ["event"], registry=r,
        )  # fmt: skip
        self.refused = Counter(
            "modelloop_webhook_refused", "Webhook deliveries not acted on, by reason.", ["reason"], registry=r
        )
        self.handler_errors = Counter(
            "modelloop_webhook_handler_errors", "Accepted webhook events whose handler raised.", registry=r
        )
        for reason in REFUSAL_REASONS:  # every series exists from the start, at 0
            self.refused.labels(reason=reason)

    def refuse(self, reason: str) -> None:
        self.refused.labels(reason=reason).inc()

    def value(self, name: str, **labels: str) -> float:
        """A sample's value (0 when absent): `value("modelloop_webhook_refused_total", reason="stale")`."""
        return self.registry.get_sample_value(name, labels) or 0.0


def read_body(headers: Message, rfile: io.BufferedIOBase, limit: int) -> bytes:
    """The request body, never reading more than `limit` bytes of it; `RejectedError` when its length is
    missing, malformed or over the limit (nothing of the offending value is echoed)."""
    encodings = headers.get_all("Transfer-Encoding") or []
    lengths = headers.get_all("Content-Length") or []
    if encodings:
        if lengths:
            raise RejectedError("send Content-Length or Transfer-Encoding, not both", 400, reason=_LENGTH)
        if [e.strip().lower() for e in ",".join(encodings).split(",")] != ["chunked"]:
            raise RejectedError("only the chunked Transfer-Encoding is supported", 501, reason=_LENGTH)
        return _read_chunked(rfile, limit)
    if not lengths:
        raise RejectedError("Content-Length header required", 411, reason="length_required")
    values = {v.strip() for v in lengths}
    value = values.pop()
    if values or not (value.isascii() and value.isdigit()):
        raise RejectedError("Content-Length must be one non-negative integer", 400, reason=_LENGTH)
    if len(value.lstrip("0")) > 18 or int(value) > limit:
        raise RejectedError(f"body over the {limit}-byte limit", 413, reason="too_large")
    body = rfile.read(int(value))
    if len(body) < int(value):
        raise RejectedError("body shorter than its Content-Length", 400, reason=_LENGTH)
    return body


def _read_chunked(rfile: io.BufferedIOBase, limit: int) -> bytes:
    body = bytearray()
    while True:
        line = rfile.readline(_MAX_LINE + 1)
        size_text = line.split(b";", 1)[0].strip().decode("latin-1")
        if not line.endswith(b"\n") or not 0 < len(size_text) <= 16 or size_text.strip(string.hexdigits):
            raise RejectedError("malformed chunk size in a chunked body", 400, reason=_LENGTH)
        size = int(size_text, 16)
        if size == 0:
            break
        if len(body) + size > limit:
            raise RejectedError(f"body over the {limit}-byte limit", 413, reason="too_large")
        chunk = rfile.read(size)
        if len(chunk) < size or rfile.readline(3) not in (b"\r\n", b"\n"):
            raise RejectedError("malformed chunk in a chunked body", 400, reason=_LENGTH)
        body += chunk
    for _ in range(_MAX_TRAILERS):  # trailers: read and dropped
        if rfile.readline(_MAX_LINE + 1) in (b"\r\n", b"\n", b""):
            return bytes(body)
    raise RejectedError("too many trailer lines in a chunked body", 400, reason=_LENGTH)


class _DeadlineReader(io.RawIOBase):
    """Reads a socket until one deadline for the whole request: a client that trickles bytes (or sends none)
    cannot hold its thread past it."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        super().__init__()
        self._sock = sock
        self._deadline = deadline
        self.timed_out = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        left = self._deadline - time.monotonic()
        try:
            if left <= 0:
                raise TimeoutError("request not received in time")
            self._sock.settimeout(left)
            return self._sock.recv_into(buffer)
        except TimeoutError:
            self.timed_out = True
            raise


def _linger(sock: socket.socket, seconds: float) -> None:
    """After answering before the whole request was read: half-close and discard what the client still sends,
    for a bounded time, so that closing does not reset the connection before the client reads the answer."""
    scratch = bytearray(64 * 1024)
    deadline = time.monotonic() + seconds
    try:
        sock.shutdown(socket.SHUT_WR)
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            if not sock.recv_into(scratch):
                return
    except OSError:
        pass


class _Handler(BaseHTTPRequestHandler):
    """One connection, one request (HTTP/1.0: no keep-alive)."""

    receiver: WebhookServer
    server_version = "modelloop-webhook"
    sys_version = ""

    def setup(self) -> None:
        super().setup()
        self.rfile.close()  # replaced by a reader with a deadline for the whole request
        self._reader = _DeadlineReader(self.connection, time.monotonic() + self.receiver.request_timeout)
        self.rfile = io.BufferedReader(self._reader)
        self._unread = False

    def handle(self) -> None:
        try:
            super().handle()
        finally:
            if self._reader.timed_out:
                self.receiver.metrics.refuse("timeout")
                log.warning(
                    "webhook client dropped: request not received within %.1fs", self.receiver.request_timeout
                )

    def finish(self) -> None:
        super().finish()
        if self._unread and not self._reader.timed_out:
            _linger(self.connection, min(_LINGER, self.receiver.request_timeout))

    def do_POST(self) -> None:
        receiver = self.receiver
        if self.path.split("?", 1)[0] != WEBHOOK_PATH:
            self._unread = True
            self._answer(404, "not found")
            return
        try:
            body = read_body(self.headers, self.rfile, receiver.max_body)
        except RejectedError as exc:
            self._unread = True
            receiver.metrics.refuse(exc.reason)
            log.warning("webhook request refused: %s", exc)
            self._answer(exc.status, str(exc))
            return
        except TimeoutError:  # counted in handle()
            self._answer(408, "request not received in time")
            return
        self._answer(*receiver.handle(self.path, dict(self.headers.items()), body))

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            self._answer(200, "ok")
        elif path == METRICS_PATH:
            self._answer(200, generate_latest(self.receiver.metrics.registry), CONTENT_TYPE_LATEST)
        else:
            self._answer(404, "not found")

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # the stock error page quotes the request back: answer the status phrase alone, with a status line
        # even when the request line was too broken to say its HTTP version
        self._unread = True
        self.request_version = "HTTP/1.0"
        self._answer(code, HTTPStatus(code).phrase.lower())

    def _answer(self, status: int, text: str | bytes, content_type: str = _TEXT) -> None:
        data = text.encode() if isinstance(text, str) else text
        self.close_connection = True
        self.connection.settimeout(self.receiver.request_timeout)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        if status == 503:
            self.send_header("Retry-After", "1")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("webhook http: %s", format % args)


class _HTTPServer(ThreadingHTTPServer):
    """A thread per connection, at most `max_connections` at once; the next ones are answered 503."""

    daemon_threads = True
    block_on_close = False  # stop() does not wait for slow clients (each is dropped at its deadline anyway)

    def __init__(self, address: tuple[str, int], handler: type[_Handler], max_connections: int) -> None:
        self._slots = threading.BoundedSemaphore(max_connections)
        self.handler = handler
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.handler.receiver.metrics.refuse("busy")
            log.warning("webhook receiver busy: connection refused with 503")
            try:  # best effort, without blocking the accepting thread
                request.setblocking(False)
                request.send(b"HTTP/1.0 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 4\r\n"
                             b"Connection: close\r\n\r\nbusy")  # fmt: skip
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.info("webhook connection failed", exc_info=True)


class WebhookServer:
    """HTTP endpoint for MLflow webhooks at `WEBHOOK_PATH` (and `/metrics`, `/healthz`); `port=0` binds a free
    port. Limits and metrics: see the module docstring."""

    def __init__(
        self,
        verifier: WebhookVerifier,
        on_event: Callable[[Event], None],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        events: Collection[str] = EVENTS,
        max_body: int = MAX_BODY,
        request_timeout: float = 5.0,
        max_connections: int = 32,
        metrics: WebhookMetrics | None = None,
    ) -> None:
        if request_timeout <= 0 or max_body < 0 or max_connections < 1:
            raise ValueError("request_timeout and max_connections must be positive, max_body not negative")
        self.verifier = verifier
        self.on_event = on_event
        self.events = frozenset(events)
        self.max_body = max_body
        self.request_timeout = request_timeout
        self.metrics = metrics or WebhookMetrics()
        for event in self.events:
            self.metrics.accepted.labels(event=event)

        class Handler(_Handler):
            pass

        Handler.receiver = self
        self._httpd = _HTTPServer((host, port), Handler, max_connections)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        host = str(self._httpd.server_address[0])
        return f"http://{host}:{self.port}{WEBHOOK_PATH}"

    @property
    def accepted(self) -> int:
        """Deliveries passed to `on_event`."""
        return int(sum(self.metrics.value("modelloop_webhook_accepted_total", event=e) for e in self.events))

    @property
    def rejected(self) -> int:
        """Deliveries refused (ignored event types not included: see `ignored`)."""
        return int(
            sum(self.metrics.value("modelloop_webhook_refused_total", reason=r) for r in REFUSAL_REASONS)
            - self.ignored
        )

    @property
    def ignored(self) -> int:
        """Signed deliveries of event types the controller does not subscribe to."""
        return int(self.metrics.value("modelloop_webhook_refused_total", reason="ignored_event"))

    def handle(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, str]:
        """Verify one delivery and pass its event on; returns the HTTP status and text to answer."""
        if path.split("?", 1)[0] != WEBHOOK_PATH:
            return 404, "not found"
        try:
            event = self.verifier.verify(headers, body)
        except RejectedError as exc:
            self.metrics.refuse(exc.reason)
            log.warning("webhook delivery refused: %s", exc)
            return exc.status, str(exc)
        if event.type not in self.events:
            self.metrics.refuse("ignored_event")
            log.info("webhook event %.64s ignored: not a subscribed event type", event.type)
            return 202, "ignored: not a subscribed event type"
        self.metrics.accepted.labels(event=event.type).inc()
        # modelloop's own tag writes (each rollout sets several) come back as deliveries: not worth a line
        log.log(
            logging.DEBUG if event.is_own_tag_write else logging.INFO,
            "webhook %s for model %.64s",
            event.type,
            event.model,
        )
        try:
            self.on_event(event)
        except Exception:
            self.metrics.handler_errors.inc()
            log.exception("webhook event handler failed")
        return 202, "accepted"

    def start(self) -> WebhookServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="webhook-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket (also when never started)."""
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._httpd.server_close()


__all__ = ["WebhookMetrics", "WebhookServer", "read_body"]
