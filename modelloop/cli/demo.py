"""`modelloop demo` (`make demo`): run the whole loop on this machine (see `demo_loop`), print the tables from
MLflow's records, and exit non-zero if any step did not happen. `--keep` leaves the platform running until
Ctrl-C so a person can click through the MLflow UI."""

from __future__ import annotations

import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import click

from modelloop.adapters.mlflow_ui import registry_url
from modelloop.cli.errors import reports_errors
from modelloop.cli.options import DURATION, log_level_option, option
from modelloop.contract.errors import ConfigError
from modelloop.contract.logs import configure_logging

MARKER = ".modelloop-demo"


def fresh_data_dir(path: Path) -> Path:
    """An empty data directory for a new demo run; only an earlier demo's directory is ever deleted."""
    path = path.resolve()
    if path.exists() and any(path.iterdir()):
        if not (path / MARKER).exists():
            raise ConfigError(f"{path} is not empty and was not made by the demo; choose another --data-dir")
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / MARKER).write_text("made by modelloop demo; deleted by the next demo run\n")
    return path


@click.command(context_settings={"show_default": True})
@option(
    "--data-dir",
    type=click.Path(path_type=Path),
    default=Path(".modelloop/demo"),
    help="Where the demo's platform keeps its state (recreated on each run).",
)
@option("--keep", is_flag=True, help="Leave the platform running afterwards, until Ctrl-C.")
@option("--mlflow-port", type=click.IntRange(0, 65535), default=0, help="MLflow UI port (0: any free port).")
@option("--trials", type=click.IntRange(min=1), default=10, help="Optuna trials per training.")
@option("--window", type=DURATION, default="12s", help="Length of a monitoring window.")
@option("--rate", type=click.FloatRange(min=0, min_open=True), default=15.0, help="Traffic, calls a second.")
@log_level_option("WARNING", from_env=False)
@reports_errors
def demo(
    data_dir: Path, *, keep: bool, mlflow_port: int, trials: int, window: float, rate: float, log_level: str
) -> None:
    """Run the whole loop on this machine and report what happened."""
    from modelloop.adapters.mlflow_registry import MlflowModelRegistry
    from modelloop.cli.demo_loop import BINDING, MODEL, DemoLoop, DemoSizes
    from modelloop.cli.demo_report import render

    configure_logging(log_level, "text")
    started = time.monotonic()

    def say(message: str) -> None:
        click.echo(f"[{time.monotonic() - started:5.0f}s] {message}", err=True)

    sizes = DemoSizes(trials=trials, window=window, rate=rate)
    loop = DemoLoop(fresh_data_dir(data_dir), sizes, say=say, mlflow_port=mlflow_port)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        result = loop.run()
        if result.tracking_uri:
            registry = MlflowModelRegistry(result.tracking_uri)
            click.echo("")
            click.echo(render(registry, MODEL, BINDING))
        stats = result.stats
        click.echo("")
        click.echo(
            f"Traffic: {stats.sent} calls sent, {stats.served} served, {stats.failed} failed; "
            f"by version {dict(sorted(stats.versions.items()))}; "
            f"latency p50 {stats.latency_ms(0.5):.1f} ms, p99 {stats.latency_ms(0.99):.1f} ms (client side)"
        )
        click.echo("")
        for number, step in enumerate(result.steps, start=1):
            mark = {True: "ok  ", False: "FAIL", None: "skip"}[step.ok]
            click.echo(f"  [{mark}] {number}. {step.title}")
        click.echo("")
        click.echo(f"MLflow UI: {registry_url(result.tracking_uri)}  (Model registry; experiments {MODEL}, "
                   "modelloop-monitoring, modelloop-deployments)")  # fmt: skip
        click.echo(f"took {time.monotonic() - started:.0f}s")
        if keep:
            click.echo("the platform keeps running; Ctrl-C stops it", err=True)
            try:
                while not stop.wait(1.0):
                    pass
            except KeyboardInterrupt:
                pass
    finally:
        loop.stop()
    if not result.ok:
        click.echo("error: the demo did not complete every step (see above)", err=True)
        sys.exit(1)
