"""`modelloop up`: start the local platform (MLflow, controller with the local target, scoring servers,
scheduled monitoring, the watched bindings file) under one data directory, print where everything is, and
run until Ctrl-C or SIGTERM. It prints its block once, then each line that changes: a binding's state goes
from "waiting" (no version at its alias) to "rolling out" to its gRPC address and version."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

import click

from modelloop.adapters.mlflow_ui import registry_url
from modelloop.cli.errors import reports_errors
from modelloop.cli.options import DURATION, log_level_option, option
from modelloop.cli.platform import LocalPlatform, PlatformSettings
from modelloop.contract.logs import configure_logging
from modelloop.contract.port_file import read_port_file


def metrics_address(platform: LocalPlatform, binding: str) -> str | None:
    """The Prometheus endpoint of a binding's scoring server, from its port file."""
    if platform.target is None:
        return None
    try:
        ports = read_port_file(platform.target.port_file(binding))
    except KeyError:  # not deployed
        return None
    if ports is None or ports.metrics is None:
        return None
    return f"http://127.0.0.1:{ports.metrics}/metrics"


def describe(platform: LocalPlatform) -> list[str]:
    """What `up` prints: the UI, the prediction log, the bindings file, then one entry per binding (its gRPC
    address, version and metrics endpoint once served, else what is under way); an entry may span lines."""
    bindings_file = platform.settings.watched_bindings_file().resolve()
    entries = [
        f"MLflow API          {platform.tracking_uri}",
        f"MLflow UI           {registry_url(platform.tracking_uri)}",
        f"prediction log      {platform.prediction_log_url}",
        f"bindings file       {bindings_file} (watched: changes apply while up runs)",
    ]
    if platform.controller is not None and platform.controller.webhook is not None:
        entries.insert(1, f"controller webhook  {platform.controller.webhook.url}")
    endpoints = platform.endpoints()
    if not endpoints:
        entries.append("no bindings yet: `modelloop bind NAME --model MODEL` adds one (no restart)")
    for endpoint in endpoints:
        head = f"binding {endpoint.binding} ({endpoint.model})"
        if endpoint.address is None:
            entries.append(f"{head}  {endpoint.status}")
            continue
        entry = f"{head}  gRPC {endpoint.address}  version {endpoint.version or '-'}"
        metrics = metrics_address(platform, endpoint.binding)
        if metrics:
            entry += f"\n  metrics {metrics}"
        entries.append(entry)
    return entries


@click.command(context_settings={"show_default": True})
@option(
    "--data-dir",
    type=click.Path(path_type=Path),
    setting=(PlatformSettings, "data_dir"),
    help="Where all state lives.",
)
@option(
    "--mlflow-port",
    type=click.IntRange(0, 65535),
    setting=(PlatformSettings, "mlflow_port"),
    help="Port of the MLflow UI/API (0: any free).",
)
@option(
    "--bindings",
    "bindings_file",
    type=click.Path(path_type=Path),
    show_default="<data-dir>/bindings.yaml",
    help="Bindings YAML file; watched: bindings added, changed or removed apply while up runs "
    "(`modelloop bind` edits it).",
)
@option(
    "--poll-interval",
    type=DURATION,
    setting=(PlatformSettings, "poll_interval"),
    help="Time between full reconciles.",
)
@option(
    "--monitor-interval",
    type=DURATION,
    setting=(PlatformSettings, "monitor_interval"),
    help="Time between monitoring passes.",
)
@option(
    "--monitor-window",
    type=DURATION,
    setting=(PlatformSettings, "monitor_window"),
    help="Length of a monitoring window.",
)
@option(
    "--local-shared/--no-local-shared",
    default=None,
    show_default="no-local-shared",
    help="One scoring server for every binding instead of one each.",
)
@option(
    "--monitor-config",
    type=click.Path(path_type=Path),
    show_default="<data-dir>/monitoring.yaml when it exists, else the built-in rules",
    help="Monitoring rules YAML file (examples/monitoring.yaml).",
)
@log_level_option()
@reports_errors
def up(**flags: Any) -> None:
    """Start the whole local platform and keep it running until Ctrl-C."""
    from modelloop.cli.live_bindings import read_bindings
    from modelloop.cli.local_monitoring import LocalMonitoring, platform_monitoring

    settings = PlatformSettings(**{k: v for k, v in flags.items() if v is not None})
    configure_logging(settings.log_level, settings.log_format)
    bindings = read_bindings(settings.watched_bindings_file())
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    click.echo(f"starting the local platform in {settings.data_dir.resolve()} ...", err=True)

    def monitoring(platform: LocalPlatform) -> LocalMonitoring:
        return platform_monitoring(platform, settings)

    platform = LocalPlatform(settings, bindings, monitor=monitoring)
    with platform:
        shown: list[str] = []
        while not stop.is_set():
            entries = describe(platform)
            new = [entry for entry in entries if entry not in shown]
            if new:
                click.echo("\n".join(new))
                shown = entries
            stop.wait(1.0)
        click.echo("stopping ...", err=True)
    click.echo("stopped", err=True)
