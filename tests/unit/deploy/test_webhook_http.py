"""The webhook receiver over real HTTP on loopback."""

import json
import time
import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from modelloop.deploy.bindings import parse_bindings
from modelloop.deploy.controller import Controller
from modelloop.deploy.fake import FakeTarget
from modelloop.deploy.webhook import EVENTS, MAX_BODY, REFUSAL_REASONS, Event, WebhookVerifier, sign
from modelloop.deploy.webhook_http import WebhookServer

from .memory_registry import MemoryRegistry


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


def signed(
    secret: str, delivery_id: str, entity: str, action: str, model: str = "m"
) -> tuple[bytes, dict[str, str]]:
    body = json.dumps({"entity": entity, "action": action, "data": {"name": model, "version": "1"}})
    ts = str(int(time.time()))
    headers = {
        "X-MLflow-Delivery-Id": delivery_id,
        "X-MLflow-Timestamp": ts,
        "X-MLflow-Signature": sign(secret, delivery_id, ts, body),
    }
    return body.encode(), headers


def scrape(server: WebhookServer) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The receiver's `/metrics`, parsed: {(sample name, sorted labels): value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=10) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = resp.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_signed_unsubscribed_event_is_answered_202_and_ignored() -> None:
    events: list[Event] = []
    server = WebhookServer(WebhookVerifier("k"), events.append).start()
    try:
        for i, (entity, action) in enumerate([("registered_model", "created"), ("prompt", "created")]):
            body, headers = signed("k", f"u{i}", entity, action)
            assert post(server.url, body, headers) == 202
        assert events == [] and (server.accepted, server.ignored, server.rejected) == (0, 2, 0)
        assert scrape(server)[("modelloop_webhook_refused_total", (("reason", "ignored_event"),))] == 2
        body, headers = signed("k", "s1", "model_version_alias", "created")
        assert post(server.url, body, headers) == 202
        assert [e.type for e in events] == ["model_version_alias.created"]
    finally:
        server.stop()


def test_unsubscribed_event_triggers_no_reconcile_in_the_controller() -> None:
    [binding] = parse_bindings({"bindings": [{"name": "churn", "model": "m"}]})
    controller = Controller([binding], MemoryRegistry(), {"local": FakeTarget()}, webhook_secret="k")
    assert controller.webhook is not None
    controller.webhook.start()  # the receiver alone (no poll, no workers): `_due` is what webhooks asked
    try:
        body, headers = signed("k", "u1", "registered_model", "created")
        assert post(controller.webhook.url, body, headers) == 202
        assert controller._due == {} and controller.webhook.ignored == 1
        body, headers = signed("k", "s1", "model_version_alias", "created")
        assert post(controller.webhook.url, body, headers) == 202
        assert set(controller._due) == {"churn"}
    finally:
        controller.webhook.stop()


def test_metrics_count_accepted_and_refusals_by_reason() -> None:
    server = WebhookServer(WebhookVerifier("k"), lambda event: None).start()
    try:
        body, headers = signed("k", "a1", "model_version", "created")
        assert post(server.url, body, headers) == 202
        assert post(server.url, body, headers) == 409
        assert post(server.url, body, {**headers, "X-MLflow-Delivery-Id": "a2"}) == 401
        assert post(server.url, body, {}) == 401
        assert post(server.url, b"x" * (MAX_BODY + 1), headers) == 413
        old = str(int(time.time()) - 3600)
        stale = {
            **headers,
            "X-MLflow-Timestamp": old,
            "X-MLflow-Signature": sign("k", "a1", old, body.decode()),
        }
        assert post(server.url, body, stale) == 401
        samples = scrape(server)
        assert samples[("modelloop_webhook_accepted_total", (("event", "model_version.created"),))] == 1
        refused = {
            labels[0][1]: value
            for (name, labels), value in samples.items()
            if name == "modelloop_webhook_refused_total"
        }
        assert refused == {reason: 0.0 for reason in REFUSAL_REASONS} | {
            "replay": 1, "bad_signature": 1, "missing_headers": 1, "too_large": 1, "stale": 1,
        }  # fmt: skip
        assert samples[("modelloop_webhook_handler_errors_total", ())] == 0
    finally:
        server.stop()


def test_subscribed_events_are_mlflow_event_types() -> None:
    from mlflow.entities.webhook import WebhookEvent

    for event in EVENTS:
        entity, action = event.split(".")
        parsed = WebhookEvent(entity, action)
        assert f"{parsed.entity.value}.{parsed.action.value}" == event
    server = WebhookServer(WebhookVerifier("k"), lambda event: None)
    try:
        assert server.events == frozenset(EVENTS)
    finally:
        server.stop()


def test_modelloop_own_tag_writes_are_not_logged() -> None:
    """Each rollout sets `modelloop.*` tags; their deliveries come back and are acted on quietly (debug)."""
    import logging

    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("modelloop.deploy.webhook_http")
    logger.addHandler(handler)
    previous = logger.level
    logger.setLevel(logging.DEBUG)
    events: list[Event] = []
    server = WebhookServer(WebhookVerifier("k"), events.append).start()
    try:
        for i, (key, action) in enumerate(
            [("modelloop.rollout", "set"), ("team", "set"), ("modelloop.x", "deleted")]
        ):
            body = json.dumps(
                {"entity": "model_version_tag", "action": action, "data": {"name": "m", "key": key}}
            )
            ts = str(int(time.time()))
            headers = {
                "X-MLflow-Delivery-Id": f"t{i}",
                "X-MLflow-Timestamp": ts,
                "X-MLflow-Signature": sign("k", f"t{i}", ts, body),
            }
            assert post(server.url, body.encode(), headers) == 202
    finally:
        server.stop()
        logger.removeHandler(handler)
        logger.setLevel(previous)
    assert [e.is_own_tag_write for e in events] == [True, False, False]
    said = [
        (r.levelno, r.getMessage()) for r in records if r.getMessage().startswith("webhook model_version_tag")
    ]
    assert [level for level, _ in said] == [logging.DEBUG, logging.INFO, logging.INFO], said
    assert server.accepted == 3
