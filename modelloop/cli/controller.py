"""`modelloop controller`: parse the controller's settings once, wire the registry, the targets the bindings
need (local subprocesses and/or Kubernetes with Lease leader election) and the webhook receiver (through
`cli.wiring`), and run the reconcile loop until SIGTERM or Ctrl-C.

MLflow's client is bounded by `CONTROLLER_BOUNDS` (the registry port retries on top with its own backoff,
and the loop retries a binding later), so a call to an unreachable MLflow never holds a reconcile for long.
`--once` reconciles each binding in this process and exits non-zero, with one `error:` line per binding, when
one is left unreconciled (MLflow unreachable, nothing to serve at the alias, a failed rollout).
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from modelloop.cli.errors import MlflowBounds, exit_code_for, one_line, reports_errors
from modelloop.cli.options import DURATION, log_level_option, option, tracking_uri_option
from modelloop.cli.wiring import (
    KubernetesServing,
    LocalServing,
    Reconciling,
    WiredController,
    needs_target,
    wire_controller,
)
from modelloop.contract.config_files import read_secret_file
from modelloop.contract.errors import ModelloopError
from modelloop.contract.logs import configure_logging
from modelloop.deploy.settings import ControllerSettings

if TYPE_CHECKING:
    from modelloop.deploy.bindings import Binding
    from modelloop.deploy.controller import Controller

#: one retry, 10 s per request: the registry port tries 3 times with backoff on top (deploy.registry)
CONTROLLER_BOUNDS = MlflowBounds(retries=1, backoff_factor=1, timeout=10)


def _read_secret(path: Path | None) -> str | None:
    return None if path is None else read_secret_file(path, what="webhook secret file")


@click.command(context_settings={"show_default": True})
@option(
    "--bindings",
    "bindings_file",
    type=click.Path(path_type=Path),
    setting=(ControllerSettings, "bindings_file"),
    help="Bindings YAML file.",
)
@tracking_uri_option()
@option(
    "--webhook-host", setting=(ControllerSettings, "webhook_host"), help="Address of the webhook receiver."
)
@option(
    "--webhook-port",
    type=click.IntRange(0, 65535),
    setting=(ControllerSettings, "webhook_port"),
    help="Port of the webhook receiver (0: any free port).",
)
@option(
    "--webhook-secret-file",
    type=click.Path(path_type=Path),
    show_default="no receiver: the poll alone",
    help="File holding the webhook secret.",
)
@option(
    "--poll-interval",
    type=DURATION,
    setting=(ControllerSettings, "poll_interval"),
    help="Time between full reconciles.",
)
@option(
    "--rollout-deadline",
    type=DURATION,
    setting=(ControllerSettings, "rollout_deadline"),
    help="Time a version has to become ready before it is rolled back.",
)
@option(
    "--local-shared/--no-local-shared",
    default=None,
    show_default="no-local-shared",
    help="Local target: one scoring server for every binding instead of one per binding.",
)
@option("--once", is_flag=True, help="Reconcile every binding once and exit.")
@log_level_option()
@reports_errors(mlflow=CONTROLLER_BOUNDS)
def controller(once: bool, webhook_secret_file: Path | None, **flags: Any) -> None:
    """Reconcile deployment bindings with the registry (poll + signed MLflow webhooks)."""
    from modelloop.deploy.bindings import load_bindings

    overrides = {k: v for k, v in flags.items() if v is not None}
    secret = _read_secret(webhook_secret_file)
    if secret is not None:
        overrides["webhook_secret"] = secret
    settings = ControllerSettings(**overrides)
    configure_logging(settings.log_level, settings.log_format)
    bindings = load_bindings(settings.bindings_file)
    wired = _wire(settings, bindings)
    try:
        if once:
            code = _reconcile_once(wired.controller, bindings)
            if code:
                raise SystemExit(code)
            return
        _run_until_signal(wired.controller)
    finally:
        wired.close()


def _wire(settings: ControllerSettings, bindings: list[Binding]) -> WiredController:
    """The controller and the targets its bindings need, from the settings."""
    from modelloop.deploy.kubernetes.manifests import ServingOptions

    local = kubernetes = None
    if needs_target(bindings, "local"):
        local = LocalServing(
            work_dir=settings.data_dir / "serving",
            prediction_log_url=settings.resolved_prediction_log_url(),
            token_file=settings.token_file,
            shared=settings.local_shared,
        )
    if needs_target(bindings, "kubernetes"):
        options = ServingOptions(
            tracking_uri=settings.scoring_tracking_uri or settings.tracking_uri,
            prediction_log_secret=settings.prediction_log_secret,
            progress_deadline_seconds=settings.scoring_progress_deadline_seconds,
            min_ready_seconds=settings.scoring_min_ready_seconds,
            owner=settings.lease_name,
        )
        kubernetes = KubernetesServing(
            image=settings.scoring_image,
            options=options,
            lease_name=settings.lease_name,
            lease_namespace=settings.lease_namespace,
            identity=settings.identity,
        )
    reconciling = Reconciling(
        poll_interval=settings.poll_interval,
        rollout_deadline=settings.rollout_deadline,
        webhook_secret=settings.webhook_secret.get_secret_value() if settings.webhook_secret else None,
        webhook_host=settings.webhook_host,
        webhook_port=settings.webhook_port,
    )
    return wire_controller(
        bindings,
        tracking_uri=settings.tracking_uri,
        reconciling=reconciling,
        local=local,
        kubernetes=kubernetes,
    )


def _run_until_signal(ctl: Controller) -> None:
    """Run the controller until SIGTERM or Ctrl-C."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    ctl.start()
    if ctl.webhook is not None:
        click.echo(f"webhook receiver at {ctl.webhook.url}", err=True)
    stop.wait()
    ctl.stop()


def _reconcile_once(ctl: Controller, bindings: list[Binding]) -> int:
    """Reconcile each binding once, here and now; print `name: outcome` for each and an `error:` line for each
    left unreconciled. Returns the exit code: 0, or that of the last problem."""
    from modelloop.deploy.reconcile import Outcome

    code = 0
    for binding in bindings:
        try:
            result = ctl.reconciler.reconcile(binding)
        except ModelloopError as exc:
            click.echo(f"{binding.name}: retry later")
            click.echo(f"error: binding {binding.name}: {one_line(str(exc))}", err=True)
            code = exit_code_for(exc)
            continue
        click.echo(f"{binding.name}: {result.outcome.value}")
        if result.outcome is Outcome.NOTHING:
            click.echo(
                f"error: binding {binding.name}: the registry names no version of {binding.model} at alias "
                f"{binding.alias} (is the model registered and the alias set?)",
                err=True,
            )
            code = 3
        elif result.outcome is Outcome.FAILED:
            click.echo(
                f"error: binding {binding.name}: {one_line(result.reason or 'rollout failed')}", err=True
            )
            code = 1
    return code
