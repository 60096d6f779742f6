"""The webhook receiver over real HTTP on loopback."""

import json
import time
import urllib.error
import urllib.request

from deploy.webhook import Event, WebhookServer, WebhookVerifier, sign


def post(url: str, body: bytes, headers: dict[str, str]) -> int:
    req = urllib.request.Request(url, data=body, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_receiver_accepts_signed_and_rejects_the_rest() -> None:
    events: list[Event] = []
    server = WebhookServer(WebhookVerifier("k"), events.append).start()
    try:
        body = json.dumps({"entity": "model_version", "action": "created", "data": {"name": "m"}})
        ts = str(int(time.time()))
        good = {
            "X-MLflow-Delivery-Id": "1",
            "X-MLflow-Timestamp": ts,
            "X-MLflow-Signature": sign("k", "1", ts, body),
        }
        assert post(server.url, body.encode(), good) == 202
        assert post(server.url, body.encode(), good) == 409
        assert post(server.url, body.encode(), {**good, "X-MLflow-Delivery-Id": "2"}) == 401
        assert post(server.url.replace("/webhook", "/other"), body.encode(), good) == 404
        assert [e.model for e in events] == ["m"]
        assert (server.accepted, server.rejected) == (1, 2)
    finally:
        server.stop()
