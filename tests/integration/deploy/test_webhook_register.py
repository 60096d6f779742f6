"""`modelloop webhook register` against a real MLflow server, and MLflow delivering to the receiver."""

from __future__ import annotations

import time
from pathlib import Path

import mlflow
from click.testing import CliRunner

from modelloop.cli import cli
from modelloop.deploy.webhook import Event, WebhookVerifier
from modelloop.deploy.webhook_http import WebhookServer

from .conftest import Registered


def test_register_is_idempotent_and_mlflow_delivers_signed_events(
    deploy_registry: Registered, tmp_path: Path
) -> None:
    reg = deploy_registry
    secret_file = tmp_path / "secret"
    secret_file.write_text("cli-secret\n")
    events: list[Event] = []
    receiver = WebhookServer(WebhookVerifier("cli-secret"), events.append).start()
    try:
        runner = CliRunner()
        args = ["webhook", "register", "--url", receiver.url, "--secret-file", str(secret_file),
                "--tracking-uri", reg.server.url, "--name", "cli-test"]  # fmt: skip
        first = runner.invoke(cli, args)
        assert first.exit_code == 0, first.output
        second = runner.invoke(cli, args)
        assert second.exit_code == 0, second.output
        client = mlflow.MlflowClient(reg.server.url)
        hooks = [w for w in client.list_webhooks() if w.name == "cli-test"]
        assert len(hooks) == 1 and hooks[0].url == receiver.url
        time.sleep(1.5)  # the server's webhook list cache (1 s here)
        client.set_registered_model_alias(reg.model, "cli-test-alias", reg.v1.version)
        deadline = time.monotonic() + 30
        while not any(e.action == "created" and e.entity == "model_version_alias" for e in events):
            assert time.monotonic() < deadline, "MLflow did not deliver the alias event"
            time.sleep(0.05)
        assert events[-1].model == reg.model and receiver.rejected == 0
        client.delete_webhook(hooks[0].webhook_id)
    finally:
        receiver.stop()


def test_register_rejects_bad_input(tmp_path: Path) -> None:
    runner = CliRunner()
    empty = tmp_path / "empty"
    empty.write_text("")
    result = runner.invoke(
        cli, ["webhook", "register", "--url", "http://x/webhook", "--secret-file", str(empty)]
    )
    assert result.exit_code == 2 and "is empty" in result.output
    result = runner.invoke(
        cli, ["webhook", "register", "--url", "ftp://x", "--secret-file", str(tmp_path / "no")]
    )
    assert result.exit_code == 2 and "cannot read webhook secret file" in result.output
