"""`modelloop webhook register`: create or update the controller's webhook in MLflow for the registry events
(`model_version_alias.created/deleted`, `model_version_tag.set/deleted`, `model_version.created`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from modelloop.cli.errors import reports_errors
from modelloop.cli.options import option, tracking_uri_option
from modelloop.contract.config_files import read_secret_file
from modelloop.contract.errors import ConfigError
from modelloop.contract.settings import CommonSettings


@click.group()
def webhook() -> None:
    """Manage the controller's MLflow webhook."""


@webhook.command()
@click.option(
    "--url", required=True, help="The controller's webhook URL, e.g. http://127.0.0.1:8090/webhook."
)
@click.option(
    "--secret-file", required=True, type=click.Path(path_type=Path), help="File holding the secret."
)
@tracking_uri_option()
@option("--name", default="modelloop-controller", help="Webhook name in MLflow.")
@reports_errors
def register(url: str, secret_file: Path, tracking_uri: str | None, name: str) -> None:
    """Register (or update) the webhook."""
    from modelloop.deploy.webhook_registration import register_webhook

    overrides: dict[str, Any] = {"tracking_uri": tracking_uri} if tracking_uri else {}
    settings = CommonSettings(**overrides)
    secret = read_secret_file(secret_file, what="webhook secret file")
    if not url.startswith(("http://", "https://")):
        raise ConfigError("--url must start with http:// or https://")
    webhook_id = register_webhook(settings.tracking_uri, url=url, secret=secret, name=name)
    click.echo(f"webhook {name} ({webhook_id}) -> {url}")
