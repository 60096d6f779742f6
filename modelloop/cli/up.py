"""`modelloop up`: start the local platform (MLflow, controller with the local target, scoring servers,
scheduled monitoring) under one data directory, print where everything is, and run until Ctrl-C or SIGTERM."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

import click

from modelloop.cli.errors import reports_errors
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
    """What `up` prints: the UI, each binding's gRPC address and metrics endpoint."""
    lines = [f"MLflow UI and API   {platform.tracking_uri}"]
    if platform.controller is not None and platform.controller.webhook is not None:
        lines.append(f"controller webhook  {platform.controller.webhook.url}")
    lines.append(f"prediction log      {platform.prediction_log_url}")
    endpoints = platform.endpoints()
    if not endpoints:
        lines.append(f"no bindings: write {platform.data_dir / 'bindings.yaml'} (see README) and restart")
    for endpoint in endpoints:
        where = endpoint.address or "not deployed yet (waiting for the alias)"
        lines.append(f"binding {endpoint.binding} ({endpoint.model})  gRPC {where}")
        metrics = metrics_address(platform, endpoint.binding)
        if metrics:
            lines.append(f"  metrics {metrics}")
    return lines


@click.command()
@click.option(
    "--data-dir", type=click.Path(path_type=Path), help="Where all state lives (default .modelloop)."
)
@click.option("--mlflow-port", type=int, help="Port of the MLflow UI/API (default 5000; 0: any free).")
@click.option("--bindings", "bindings_file", type=click.Path(path_type=Path), help="Bindings YAML file.")
@click.option("--poll-interval", type=float, help="Seconds between full reconciles (default 30).")
@click.option("--monitor-interval", type=float, help="Seconds between monitoring passes (default 300).")
@click.option("--monitor-window", type=float, help="Length of a monitoring window in seconds (default 900).")
@click.option(
    "--local-shared/--no-local-shared",
    default=None,
    help="One scoring server for every binding instead of one each (default: one each).",
)
@click.option("--monitor-config", type=click.Path(path_type=Path), help="Monitoring rules YAML file.")
@reports_errors
def up(**flags: Any) -> None:
    """Start the whole local platform and keep it running until Ctrl-C."""
    from modelloop.cli.local_monitoring import LocalMonitoring, platform_monitoring
    from modelloop.deploy.bindings import load_bindings

    settings = PlatformSettings(**{k: v for k, v in flags.items() if v is not None})
    configure_logging(settings.log_level, settings.log_format)
    bindings_file = settings.resolved_bindings_file()
    bindings = load_bindings(bindings_file) if bindings_file is not None else []
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
            lines = describe(platform)
            if lines != shown:
                click.echo("\n".join(lines))
                shown = lines
            stop.wait(2.0)
        click.echo("stopping ...", err=True)
    click.echo("stopped", err=True)
