"""`modelloop monitor`: parse the monitoring settings once, wire the prediction log, MLflow and the
retrainer (a `modelloop train` subprocess, or a Kubernetes Job when MODELLOOP_RETRAIN_JOB_TEMPLATE is set),
and measure one window per model, once or every interval.

A one-shot pass needs every model named to be registered in MLflow (a typo would otherwise record empty
windows under a new name): checked before any window is measured, which also says at once when MLflow cannot
be reached. `--every` checks too but only warns: a long-running monitor may start before its model is
registered (a fresh install), and outlives an MLflow outage. MLflow's
client is bounded by `MONITOR_BOUNDS`, so a pass against an unreachable MLflow fails within seconds, and
`--every` stops on SIGTERM after the pass in progress.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from pathlib import Path
from typing import Any

import click

from modelloop.cli.errors import MlflowBounds, reports_errors
from modelloop.contract.errors import InvalidInputError, ModelloopError, NotFoundError, UnavailableError
from modelloop.contract.logs import configure_logging

#: 3 attempts, 30 s per request at most (reports and plots are uploaded as artifacts)
MONITOR_BOUNDS = MlflowBounds(retries=2, backoff_factor=1, timeout=30)

log = logging.getLogger(__name__)


def _line(outcome: Any) -> str:
    share = f"{outcome.summary.share_drifted:.3g}" if outcome.summary and outcome.status == "ok" else "-"
    drifted = sorted(n for n, f in outcome.features.items() if f.drifted)
    return (
        f"{outcome.model} {outcome.window.id} version={outcome.version or '-'} status={outcome.status} "
        f"rows={outcome.rows} share_drifted={share} drifted=[{','.join(drifted)}] "
        f"retrain={outcome.decision.decision} run={outcome.run_id}"
    )


def _report(result: Any) -> bool:
    """Print a pass's outcomes and its failures; True when every model was measured."""
    for outcome in result.outcomes:
        click.echo(_line(outcome))
    for name, message in result.failures.items():
        click.echo(f"error: {name}: {message}", err=True)
    return not result.failures


def _check_registered(client: Any, tracking_uri: str, models: tuple[str, ...]) -> None:
    """NotFoundError for the first model not registered; UnavailableError when MLflow cannot be reached."""
    from mlflow.exceptions import MlflowException

    from modelloop.serving.model_host import public_uri

    for name in models:
        try:
            client.get_registered_model(name)
        except MlflowException as exc:
            where = f"MLflow at {public_uri(tracking_uri)}"
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"):
                raise NotFoundError(f"model {name[:64]} is not registered in {where}") from None
            raise UnavailableError(f"{where} unreachable ({exc.error_code})") from None


@click.command()
@click.option("--model", "models", multiple=True, help="Registered model name (repeatable).")
@click.option(
    "--bindings",
    "bindings_file",
    type=click.Path(path_type=Path),
    help="Monitor every model bound in this bindings file (with or instead of --model).",
)
@click.option(
    "--window",
    "window_length",
    help="Window length (e.g. 15m): the last complete window of that "
    "length, aligned to multiples of it, so re-running replaces the same run.",
)
@click.option("--start", help="Window start (ISO-8601, UTC unless stated, or unix seconds); with --end.")
@click.option("--end", help="Window end (exclusive); with --start.")
@click.option("--tracking-uri", help="MLflow tracking URI.")
@click.option("--prediction-log-url", help="SQLAlchemy URL of the prediction log.")
@click.option("--config", "monitor_config", type=click.Path(path_type=Path), help="Monitoring config YAML.")
@click.option("--retrain/--no-retrain", default=None, help="Launch retrainings when a policy fires.")
@click.option(
    "--retrain-dir", type=click.Path(path_type=Path), help="Folder for retraining configs and logs."
)
@click.option("--every", help="Repeat every interval (e.g. 60s) until stopped; needs --window.")
@reports_errors(mlflow=MONITOR_BOUNDS)
def monitor(
    *,
    models: tuple[str, ...],
    bindings_file: Path | None,
    window_length: str | None,
    start: str | None,
    end: str | None,
    every: str | None,
    **flags: Any,
) -> None:
    """Measure drift and quality of each model over a window, write it to MLflow, maybe retrain."""
    from modelloop.contract.predlog import open_prediction_log
    from modelloop.monitoring.config import load_monitor_config
    from modelloop.monitoring.job import run_pass, run_window
    from modelloop.monitoring.retrain import Retrainer, SubprocessRetrainer
    from modelloop.monitoring.settings import MonitorSettings
    from modelloop.monitoring.tracking import MonitoringTracker
    from modelloop.monitoring.window import Window, parse_duration, parse_time

    if bindings_file is not None:
        from modelloop.deploy.bindings import load_bindings

        bound = [b.model for b in load_bindings(bindings_file)]
        models = tuple(dict.fromkeys([*models, *bound]))
    if not models:
        raise InvalidInputError("give --model (repeatable) or --bindings")
    if (window_length is None) == (start is None and end is None):
        raise InvalidInputError("give either --window or both --start and --end")
    if window_length is None and (start is None or end is None):
        raise InvalidInputError("--start and --end go together")
    if every is not None and window_length is None:
        raise InvalidInputError("--every needs --window")
    # the window arguments are checked before anything is contacted
    window = Window(parse_time(start), parse_time(end)) if start is not None and end is not None else None
    length = parse_duration(window_length) if window_length is not None else None
    interval = parse_duration(every) if every is not None else None
    settings = MonitorSettings(**{k: v for k, v in flags.items() if v is not None})
    configure_logging(settings.log_level, settings.log_format)
    config = load_monitor_config(settings.monitor_config)
    tracker = MonitoringTracker(settings.tracking_uri)
    retrainer: Retrainer | None = None
    if settings.retrain and settings.retrain_job_template is not None:
        from modelloop.deploy.retrain_job import cluster_retrainer

        retrainer = cluster_retrainer(settings.retrain_job_template, namespace=settings.retrain_namespace)
    elif settings.retrain:
        retrainer = SubprocessRetrainer(settings.resolved_retrain_dir())
    try:
        _check_registered(tracker.client, settings.tracking_uri, models)
    except UnavailableError as exc:
        if interval is None:  # nothing can be measured or recorded: say so for each model
            for name in models:
                click.echo(f"error: {name}: {exc}", err=True)
            raise SystemExit(1) from None
        log.warning("%s; the passes will try again", exc)  # a long-running monitor outlives an outage
    except NotFoundError as exc:
        if interval is None:
            raise
        log.warning("%s; its windows are recorded as they come", exc)  # a fresh install registers later
    store = open_prediction_log(settings.resolved_prediction_log_url())
    budget = settings.memory_budget_mb << 20
    try:
        if window is not None:
            failed = False
            for name in models:
                try:
                    outcome = run_window(
                        name,
                        window,
                        store=store,
                        tracker=tracker,
                        config=config.for_model(name),
                        retrainer=retrainer,
                        memory_budget=budget,
                    )
                    click.echo(_line(outcome))
                except ModelloopError as exc:
                    click.echo(f"error: {name}: {exc}", err=True)
                    failed = True
            if failed:
                raise SystemExit(1)
            return
        assert length is not None
        if interval is None:
            result = run_pass(
                models,
                length=length,
                store=store,
                tracker=tracker,
                config=config,
                retrainer=retrainer,
                memory_budget=budget,
            )
            if not _report(result):
                raise SystemExit(1)
            return
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        while not stop.is_set():
            began = time.monotonic()
            result = run_pass(
                models,
                length=length,
                store=store,
                tracker=tracker,
                config=config,
                retrainer=retrainer,
                skip_recorded=True,
                memory_budget=budget,
            )
            _report(result)
            stop.wait(max(0.0, interval - (time.monotonic() - began)))
    finally:
        store.close()
