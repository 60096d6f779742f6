"""`modelloop controller`: parse the controller's settings once, wire the registry, the targets the bindings
need (local subprocesses and/or Kubernetes with Lease leader election) and the webhook receiver, and run the
reconcile loop until SIGTERM or Ctrl-C."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Any

import click

from modelloop.cli.errors import reports_errors
from modelloop.errors import ConfigError
from modelloop.logs import configure_logging


def _read_secret(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        secret = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"cannot read webhook secret file {path}: {exc.strerror}") from None
    if not secret:
        raise ConfigError(f"webhook secret file {path} is empty")
    return secret


@click.command()
@click.option("--bindings", "bindings_file", type=click.Path(path_type=Path), help="Bindings YAML file.")
@click.option("--tracking-uri", help="MLflow tracking URI.")
@click.option("--webhook-host", help="Address of the webhook receiver.")
@click.option("--webhook-port", type=int, help="Port of the webhook receiver (0: any free port).")
@click.option(
    "--webhook-secret-file", type=click.Path(path_type=Path), help="File holding the webhook secret."
)
@click.option("--poll-interval", type=float, help="Seconds between full reconciles (default 30).")
@click.option("--rollout-deadline", type=float, help="Seconds a version has to become ready (default 120).")
@click.option(
    "--local-shared/--no-local-shared",
    default=None,
    help="Local target: one scoring server for every binding (default: one per binding).",
)
@click.option("--once", is_flag=True, help="Reconcile every binding once and exit.")
@reports_errors
def controller(once: bool, webhook_secret_file: Path | None, **flags: Any) -> None:
    """Reconcile deployment bindings with the registry (poll + signed MLflow webhooks)."""
    from deploy.bindings import load_bindings
    from deploy.controller import Controller
    from deploy.registry import MlflowRegistry
    from deploy.settings import ControllerSettings
    from deploy.target import DeploymentTarget

    overrides = {k: v for k, v in flags.items() if v is not None}
    secret = _read_secret(webhook_secret_file)
    if secret is not None:
        overrides["webhook_secret"] = secret
    settings = ControllerSettings(**overrides)
    configure_logging(settings.log_level, settings.log_format)
    # MLflow's client retries for minutes by default; the controller retries with its own backoff instead
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")

    bindings = load_bindings(settings.bindings_file)
    targets: dict[str, DeploymentTarget] = {}
    leader = None
    if any(b.target == "local" for b in bindings):
        from deploy.local import LocalTarget

        targets["local"] = LocalTarget(
            tracking_uri=settings.tracking_uri,
            work_dir=settings.data_dir / "serving",
            prediction_log_url=settings.resolved_prediction_log_url(),
            token_file=settings.token_file,
            shared=settings.local_shared,
        )
    if any(b.target == "kubernetes" for b in bindings):
        from deploy.kubernetes.api import DynamicKubeApi
        from deploy.kubernetes.leader import LeaseElector
        from deploy.kubernetes.manifests import ServingOptions
        from deploy.kubernetes.target import KubernetesTarget

        api = DynamicKubeApi()
        options = ServingOptions(
            tracking_uri=settings.scoring_tracking_uri or settings.tracking_uri,
            prediction_log_secret=settings.prediction_log_secret,
            progress_deadline_seconds=settings.scoring_progress_deadline_seconds,
            min_ready_seconds=settings.scoring_min_ready_seconds,
            owner=settings.lease_name,
        )
        # the target lists only where its bindings live: the chart's Role is namespaced, not cluster-wide
        namespaces = {b.namespace for b in bindings if b.target == "kubernetes"}
        targets["kubernetes"] = KubernetesTarget(
            api, namespaces=namespaces, image=settings.scoring_image, options=options
        )
        leader = LeaseElector(
            api, name=settings.lease_name, namespace=settings.lease_namespace, identity=settings.identity
        )
    ctl = Controller(
        bindings,
        MlflowRegistry(settings.tracking_uri),
        targets,
        poll_interval=settings.poll_interval,
        rollout_deadline=settings.rollout_deadline,
        webhook_secret=settings.webhook_secret.get_secret_value() if settings.webhook_secret else None,
        webhook_host=settings.webhook_host,
        webhook_port=settings.webhook_port,
        leader=leader,
    )
    try:
        if once:
            for name, result in ctl.reconcile_all().items():
                click.echo(f"{name}: {result.outcome.value if result else 'retry later'}")
            return
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        ctl.start()
        if ctl.webhook is not None:
            click.echo(f"webhook receiver at {ctl.webhook.url}", err=True)
        stop.wait()
        ctl.stop()
    finally:
        for target in targets.values():
            target.close()
