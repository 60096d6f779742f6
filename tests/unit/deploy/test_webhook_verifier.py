import json

import pytest

from modelloop.deploy.webhook import REFUSAL_REASONS, RejectedError, WebhookVerifier, sign

NOW = 1_800_000_000.0
BODY = json.dumps(
    {
        "entity": "model_version_alias",
        "action": "created",
        "data": {"name": "m", "alias": "production", "version": "2"},
    }
)


def headers(
    delivery: str = "d1", ts: float = NOW, secret: str = "s3cret", body: str = BODY
) -> dict[str, str]:
    return {
        "X-MLflow-Delivery-Id": delivery,
        "X-MLflow-Timestamp": str(int(ts)),
        "X-MLflow-Signature": sign(secret, delivery, str(int(ts)), body),
    }


def verifier() -> WebhookVerifier:
    return WebhookVerifier("s3cret", clock=lambda: NOW)


def test_valid_delivery_is_parsed() -> None:
    event = verifier().verify(headers(), BODY.encode())
    assert (event.entity, event.action, event.model) == ("model_version_alias", "created", "m")


def test_matches_mlflow_signature() -> None:
    from mlflow.webhooks.delivery import _generate_hmac_signature

    assert sign("k", "id", "12", "{}") == _generate_hmac_signature("k", "id", "12", "{}")


@pytest.mark.parametrize(
    ("hdrs", "body", "message", "label"),
    [
        (headers(secret="wrong"), BODY, "bad signature", "bad_signature"),
        (headers(), BODY.replace('"2"', '"3"'), "bad signature", "bad_signature"),
        (headers(ts=NOW - 301), BODY, "stale", "stale"),
        (headers(ts=NOW + 3600), BODY, "stale", "stale"),
        ({"X-MLflow-Timestamp": str(int(NOW))}, BODY, "missing", "missing_headers"),
        ({**headers(), "X-MLflow-Timestamp": "soon"}, BODY, "malformed", "malformed"),
    ],
)
def test_rejections(hdrs: dict[str, str], body: str, message: str, label: str) -> None:
    with pytest.raises(RejectedError, match=message) as info:
        verifier().verify(hdrs, body.encode())
    assert info.value.reason == label and info.value.reason in REFUSAL_REASONS


def test_replay_rejected_but_forgery_does_not_burn_the_id() -> None:
    v = verifier()
    with pytest.raises(RejectedError, match="bad signature"):
        v.verify(headers(secret="wrong"), BODY.encode())
    v.verify(headers(), BODY.encode())
    with pytest.raises(RejectedError, match="replayed") as info:
        v.verify(headers(), BODY.encode())
    assert (info.value.status, info.value.reason) == (409, "replay")


def test_signed_garbage_body_is_rejected() -> None:
    with pytest.raises(RejectedError, match="not an MLflow webhook payload"):
        verifier().verify(headers(body="[1]"), b"[1]")
