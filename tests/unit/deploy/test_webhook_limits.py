"""The webhook receiver's bounds against a real receiver on loopback, over raw sockets and http.client: what a
client sends cannot make it read past its body limit, crash, or hold a thread past the request deadline."""

from __future__ import annotations

import http.client
import json
import select
import socket
import threading
import time
import tracemalloc
from collections.abc import Iterator

import pytest

from modelloop.deploy.webhook import MAX_BODY, Event, WebhookVerifier, sign
from modelloop.deploy.webhook_http import WebhookServer

SECRET = "limits-secret"
MiB = 1 << 20


@pytest.fixture
def events() -> list[Event]:
    return []


@pytest.fixture
def server(events: list[Event]) -> Iterator[WebhookServer]:
    receiver = WebhookServer(WebhookVerifier(SECRET), events.append).start()
    try:
        yield receiver
    finally:
        receiver.stop()


def delivery(
    delivery_id: str, *, entity: str = "model_version", action: str = "created"
) -> tuple[bytes, dict[str, str]]:
    body = json.dumps({"entity": entity, "action": action, "data": {"name": "m", "version": "1"}})
    ts = str(int(time.time()))
    headers = {
        "X-MLflow-Delivery-Id": delivery_id,
        "X-MLflow-Timestamp": ts,
        "X-MLflow-Signature": sign(SECRET, delivery_id, ts, body),
        "Content-Type": "application/json",
    }
    return body.encode(), headers


def head(*lines: str, path: str = "/webhook") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n" + "".join(f"{x}\r\n" for x in lines) + "\r\n"
    ).encode()


def exchange(port: int, request: bytes, body: bytes = b"", *, timeout: float = 30.0) -> bytes:
    """Send a request over a raw socket (the body from another thread, so that an early answer is read while
    the body is still going out) and return everything the receiver answered until it closed."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:

        def send() -> None:
            try:
                sock.sendall(request)
                view = memoryview(body)
                for i in range(0, len(view), 64 * 1024):
                    sock.sendall(view[i : i + 64 * 1024])
            except OSError:
                pass  # the receiver answered and closed before taking all of it

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        answer = bytearray()
        try:
            while chunk := sock.recv(64 * 1024):
                answer += chunk
        except ConnectionResetError:
            pass
        sender.join(timeout)
    return bytes(answer)


def status_and_text(answer: bytes) -> tuple[int, str]:
    head_part, _, text = answer.partition(b"\r\n\r\n")
    return int(head_part.split(b" ", 2)[1]), text.decode()


def post(port: int, body: bytes, headers: dict[str, str], *, chunked: bool = False) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        if chunked:
            pieces = [body[i : i + 7] for i in range(0, len(body), 7)]
            conn.request("POST", "/webhook", body=iter(pieces), headers=headers, encode_chunked=True)
        else:
            conn.request("POST", "/webhook", body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


def refused(server: WebhookServer, reason: str) -> float:
    return server.metrics.value("modelloop_webhook_refused_total", reason=reason)


def still_open(sock: socket.socket) -> bool:
    """Nothing received and not closed by the receiver (without waiting)."""
    readable, _, _ = select.select([sock], [], [], 0)
    return not readable


def wait_closed(sock: socket.socket, timeout: float) -> bool:
    """Whether the receiver closed this connection within `timeout` seconds (whatever it answered)."""
    sock.settimeout(timeout)
    try:
        while sock.recv(4096):
            pass
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return True


def test_content_length_minus_one_with_a_large_body_is_refused_without_reading_it(
    server: WebhookServer,
) -> None:
    body = b"x" * (10 * MiB)  # allocated before tracing: only what the receiver allocates is measured
    tracemalloc.start()
    try:
        answer = exchange(server.port, head("Content-Length: -1"), body)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    status, text = status_and_text(answer)
    assert status == 400 and "Content-Length must be one non-negative integer" in text
    assert peak < 4 * MiB, f"the receiver allocated {peak / MiB:.1f} MiB for a refused body"
    assert refused(server, "bad_length") == 1 and server.accepted == 0


@pytest.mark.parametrize(
    "lines",
    [
        ["Content-Length: lots-of-SECRETDATA"],
        ["Content-Length: 1_0"],
        ["Content-Length: +10"],
        ["Content-Length: 10, 11"],
        ["Content-Length: 10", "Content-Length: 11"],
        ["Content-Length: 10", "Transfer-Encoding: chunked"],
    ],
)
def test_bad_content_length_is_a_clear_400_and_the_receiver_keeps_serving(
    server: WebhookServer, events: list[Event], lines: list[str]
) -> None:
    status, text = status_and_text(exchange(server.port, head(*lines), b"0123456789"))
    assert status == 400 and "Content-Length" in text
    assert "SECRETDATA" not in text and "1_0" not in text and "+10" not in text
    assert refused(server, "bad_length") == 1
    body, headers = delivery("after-bad-length")
    assert post(server.port, body, headers) == (202, "accepted") and len(events) == 1


def test_missing_content_length_is_411(server: WebhookServer) -> None:
    status, text = status_and_text(exchange(server.port, head("Content-Type: application/json"), b"{}"))
    assert (status, text) == (411, "Content-Length header required")
    assert refused(server, "length_required") == 1


def test_oversized_content_length_is_413_before_the_body_arrives(server: WebhookServer) -> None:
    # no body is sent at all: the answer must not wait for it
    status, text = status_and_text(exchange(server.port, head("Content-Length: 100000000000000000000000")))
    assert (status, text) == (413, f"body over the {MAX_BODY}-byte limit")
    status, text = status_and_text(exchange(server.port, head(f"Content-Length: {MAX_BODY + 1}")))
    assert status == 413
    # and a client that does send the whole oversized body still reads the answer (no reset)
    body, headers = delivery("too-big")
    assert post(server.port, body + b" " * MAX_BODY, headers)[0] == 413
    assert refused(server, "too_large") == 3 and server.accepted == 0


def test_chunked_bodies_are_decoded_within_the_same_limit(server: WebhookServer, events: list[Event]) -> None:
    body, headers = delivery("chunked-ok")
    assert post(server.port, body, headers, chunked=True) == (202, "accepted")
    assert [e.model for e in events] == ["m"]
    chunk = b"%x\r\n%s\r\n" % (64 * 1024, b"x" * 64 * 1024)
    endless = chunk * (2 * MAX_BODY // (64 * 1024))
    status, text = status_and_text(exchange(server.port, head("Transfer-Encoding: chunked"), endless))
    assert (status, text) == (413, f"body over the {MAX_BODY}-byte limit")
    status, text = status_and_text(
        exchange(server.port, head("Transfer-Encoding: chunked"), b"zz-SECRET\r\n")
    )
    assert (status, text) == (400, "malformed chunk size in a chunked body")
    status, text = status_and_text(
        exchange(server.port, head("Transfer-Encoding: gzip, chunked"), b"0\r\n\r\n")
    )
    assert (status, text) == (501, "only the chunked Transfer-Encoding is supported")
    assert refused(server, "too_large") == 1 and refused(server, "bad_length") == 2
    assert len(events) == 1


def test_silent_client_is_dropped_and_others_are_served_meanwhile(events: list[Event]) -> None:
    server = WebhookServer(WebhookVerifier(SECRET), events.append).start()  # the default deadline, 5 s
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as silent:
            body, headers = delivery("while-silent")
            assert post(server.port, body, headers) == (202, "accepted")
            assert still_open(silent), "the receiver dropped the silent client before serving the other"
            assert wait_closed(silent, 30.0), "a client that sends nothing was never dropped"
        deadline = time.monotonic() + 30
        while refused(server, "timeout") < 1:
            assert time.monotonic() < deadline, "the dropped client was not counted"
            time.sleep(0.05)
        assert len(events) == 1
    finally:
        server.stop()


def test_trickling_client_is_dropped_at_the_request_deadline(events: list[Event]) -> None:
    # a byte every 0.2 s resets any per-read timeout: only a deadline for the whole request drops it
    server = WebhookServer(WebhookVerifier(SECRET), events.append).start()  # the default deadline, 5 s
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            sock.sendall(b"POST /webhook HTTP/1.1\r\nX-Slow: ")
            started = time.monotonic()
            dropped = False
            while not dropped and time.monotonic() - started < 30:
                try:
                    sock.sendall(b"a")
                except OSError:
                    dropped = True
                    break
                readable, _, _ = select.select([sock], [], [], 0.2)
                dropped = bool(readable)  # EOF or a reset: closed by the receiver
            assert dropped, "a client trickling bytes held its thread for 30 s"
        body, headers = delivery("after-trickle")
        assert post(server.port, body, headers) == (202, "accepted")
    finally:
        server.stop()


def test_connections_over_the_cap_get_503_and_the_receiver_recovers(events: list[Event]) -> None:
    server = WebhookServer(
        WebhookVerifier(SECRET), events.append, request_timeout=2.0, max_connections=2
    ).start()
    try:
        idle = [socket.create_connection(("127.0.0.1", server.port), timeout=30) for _ in range(2)]
        try:
            status, text = status_and_text(exchange(server.port, b""))
            assert (status, text) == (503, "busy")
            assert all(wait_closed(s, 30.0) for s in idle)
        finally:
            for s in idle:
                s.close()
        body, headers = delivery("after-busy")
        deadline = time.monotonic() + 30
        while (answer := post(server.port, body, headers)) != (
            202,
            "accepted",
        ):  # slots free once threads end
            assert answer[0] == 503 and time.monotonic() < deadline, answer
            body, headers = delivery(f"after-busy-{time.monotonic()}")
            time.sleep(0.1)
        assert refused(server, "busy") >= 1 and len(events) == 1
    finally:
        server.stop()


def test_malformed_requests_get_a_status_phrase_never_an_echo(server: WebhookServer) -> None:
    status, text = status_and_text(exchange(server.port, b"POST /webhook HTTP/1.1<SECRET>\r\n\r\n"))
    assert (status, text) == (400, "bad request")
    status, text = status_and_text(exchange(server.port, b"PUTSECRET /webhook HTTP/1.0\r\n\r\n"))
    assert (status, text) == (501, "not implemented")
