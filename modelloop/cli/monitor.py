"""`modelloop monitor`: parse the monitoring settings once, wire the prediction log, MLflow and the
retrainer (a `modelloop train` subprocess, or a Kubernetes Job when MODELLOOP_RETRAIN_JOB_TEMPLATE is set),
and measure one window per model, once or every interval.

A one-shot pass needs every model named to be registered in MLflow (a typo would otherwise record empty
windows under a new name): checked before any window is measured, which also says at once when MLflow cannot
be reached. `--every` checks too but only warns: a long-running monitor may start before its model is
registered (a fresh install), and outlives an MLflow outage. A window without traffic is not recorded; its
line says so, and `--every` prints only the first of an idle stretch (`QuietEmpty`). MLflow's client is
bounded by `MONITOR_BOUNDS`, so a pass against an unreachable MLflow fails within seconds, and
`--every` stops on SIGTERM after the pass in progress.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from modelloop.cli.errors import MlflowBounds, reports_errors
from modelloop.cli.options import DURATION, log_level_option, option, tracking_uri_option
from modelloop.contract.errors import (
    InvalidInputError,
    ModelloopError,
    NotFoundError,
    UnavailableError,
    public_uri,
)
from modelloop.contract.logs import configure_logging

if TYPE_CHECKING:  # the parts are imported when the command runs (`modelloop monitor --help` stays fast)
    from modelloop.cli.local_monitoring import QuietEmpty
    from modelloop.contract.model_registry import ModelRegistry
    from modelloop.contract.predlog.store import SqlPredictionLog
    from modelloop.monitoring.config import MonitorConfig
    from modelloop.monitoring.job import PassResult, WindowOutcome
    from modelloop.monitoring.records import MonitoringRecords
    from modelloop.monitoring.retrain import Retrainer
    from modelloop.monitoring.settings import MonitorSettings
    from modelloop.monitoring.window import Window

#: 3 attempts, 30 s per request at most (reports and plots are uploaded as artifacts)
MONITOR_BOUNDS = MlflowBounds(retries=2, backoff_factor=1, timeout=30)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Schedule:
    """What to measure and when, from the flags (checked before anything is contacted)."""

    models: tuple[str, ...]
    window: Window | None  # --start/--end: this window, once
    length: float | None  # --window: the last complete window of this length
    interval: float | None  # --every: a pass every this many seconds, until stopped


@dataclass(frozen=True)
class _Wired:
    """The job's collaborators, built from the settings."""

    store: SqlPredictionLog
    registry: ModelRegistry
    records: MonitoringRecords
    config: MonitorConfig
    retrainer: Retrainer | None
    memory_budget: int


def _line(outcome: WindowOutcome) -> str:
    if outcome.status == "empty":
        return (
            f"{outcome.model} {outcome.window.id} version=- status=empty rows=0 "
            "(no traffic; not recorded, counted on the next window's run)"
        )
    share = f"{outcome.summary.share_drifted:.3g}" if outcome.summary and outcome.status == "ok" else "-"
    drifted = sorted(n for n, f in outcome.features.items() if f.drifted)
    return (
        f"{outcome.model} {outcome.window.id} version={outcome.version or '-'} status={outcome.status} "
        f"rows={outcome.rows} share_drifted={share} drifted=[{','.join(drifted)}] "
        f"retrain={outcome.decision.decision} run={outcome.run_id}"
    )


def _report(result: PassResult, quiet: QuietEmpty | None = None) -> bool:
    """Print a pass's outcomes (with `quiet`, only the first empty window of an idle stretch) and its
    failures; True when every model was measured."""
    for outcome in result.outcomes:
        if quiet is None or quiet.worth_saying(outcome):
            click.echo(_line(outcome))
    for name, message in result.failures.items():
        click.echo(f"error: {name}: {message}", err=True)
    return not result.failures


def _check_registered(registry: ModelRegistry, tracking_uri: str, models: tuple[str, ...]) -> None:
    """NotFoundError for the first model not registered; UnavailableError when MLflow cannot be reached."""
    for name in models:
        if not registry.model_exists(name):
            raise NotFoundError(
                f"model {name[:64]} is not registered in MLflow at {public_uri(tracking_uri)}"
            )


def _schedule(
    models: tuple[str, ...],
    *,
    bindings_file: Path | None,
    window_length: float | None,
    start: str | None,
    end: str | None,
    every: float | None,
) -> _Schedule:
    """The models (with those bound in `bindings_file`) and the window flags, checked and parsed."""
    from modelloop.monitoring.window import Window, parse_time

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
    return _Schedule(
        models=models,
        window=Window(parse_time(start), parse_time(end)) if start is not None and end is not None else None,
        length=window_length,
        interval=every,
    )


def _retrainer(settings: MonitorSettings) -> Retrainer | None:
    """A Kubernetes Job retrainer when a Job template is set, else a `modelloop train` subprocess; None with
    retraining off."""
    from modelloop.monitoring.retrain import SubprocessRetrainer

    if not settings.retrain:
        return None
    if settings.retrain_job_template is not None:
        from modelloop.deploy.kubernetes.retrain_job import cluster_retrainer

        return cluster_retrainer(settings.retrain_job_template, namespace=settings.retrain_namespace)
    return SubprocessRetrainer(settings.resolved_retrain_dir())


def _wire(settings: MonitorSettings, schedule: _Schedule) -> _Wired:
    """Build the collaborators in the order that says the cheapest mistake first: the config file, the
    retraining Job template, MLflow (see the module docstring), then the prediction log."""
    from modelloop.adapters.mlflow_registry import MlflowModelRegistry
    from modelloop.contract.predlog import open_prediction_log
    from modelloop.monitoring.config import load_monitor_config
    from modelloop.monitoring.mlflow_records import MlflowMonitoringRecords

    config = load_monitor_config(settings.monitor_config)
    registry = MlflowModelRegistry(settings.tracking_uri)
    records = MlflowMonitoringRecords(settings.tracking_uri)
    retrainer = _retrainer(settings)
    try:
        _check_registered(registry, settings.tracking_uri, schedule.models)
    except UnavailableError as exc:
        if schedule.interval is None:  # nothing can be measured or recorded: say so for each model
            for name in schedule.models:
                click.echo(f"error: {name}: {exc}", err=True)
            raise SystemExit(1) from None
        log.warning("%s; the passes will try again", exc)  # a long-running monitor outlives an outage
    except NotFoundError as exc:
        if schedule.interval is None:
            raise
        log.warning("%s; its windows are recorded as they come", exc)  # a fresh install registers later
    store = open_prediction_log(settings.resolved_prediction_log_url())
    return _Wired(
        store=store,
        registry=registry,
        records=records,
        config=config,
        retrainer=retrainer,
        memory_budget=settings.memory_budget_mb << 20,
    )


def _measure_window(wired: _Wired, models: tuple[str, ...], window: Window) -> bool:
    """`--start/--end`: measure each model over `window` and print its line; True when all were measured."""
    from modelloop.monitoring.job import run_window

    failed = False
    for name in models:
        try:
            outcome = run_window(
                name,
                window,
                store=wired.store,
                registry=wired.registry,
                records=wired.records,
                config=wired.config.for_model(name),
                retrainer=wired.retrainer,
                memory_budget=wired.memory_budget,
            )
            click.echo(_line(outcome))
        except ModelloopError as exc:
            click.echo(f"error: {name}: {exc}", err=True)
            failed = True
    return not failed


def _pass(
    wired: _Wired,
    models: tuple[str, ...],
    length: float,
    *,
    skip_recorded: bool,
    quiet: QuietEmpty | None = None,
) -> bool:
    """One pass over the last complete window of `length`, printed; True when every model was measured."""
    from modelloop.monitoring.job import run_pass

    result = run_pass(
        models,
        length=length,
        store=wired.store,
        registry=wired.registry,
        records=wired.records,
        config=wired.config,
        retrainer=wired.retrainer,
        skip_recorded=skip_recorded,
        memory_budget=wired.memory_budget,
    )
    return _report(result, quiet)


def _every(wired: _Wired, models: tuple[str, ...], length: float, interval: float) -> None:
    """`--every`: a pass each interval (a window already recorded is skipped) until SIGTERM or SIGINT, which
    stop the loop after the pass in progress."""
    from modelloop.cli.local_monitoring import QuietEmpty

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    quiet = QuietEmpty()
    while not stop.is_set():
        began = time.monotonic()
        _pass(wired, models, length, skip_recorded=True, quiet=quiet)
        stop.wait(max(0.0, interval - (time.monotonic() - began)))


def _run(wired: _Wired, schedule: _Schedule) -> bool:
    """Measure as the schedule says; True when every model was measured (always, for `--every`)."""
    if schedule.window is not None:
        return _measure_window(wired, schedule.models, schedule.window)
    assert schedule.length is not None
    if schedule.interval is None:
        return _pass(wired, schedule.models, schedule.length, skip_recorded=False)
    _every(wired, schedule.models, schedule.length, schedule.interval)
    return True


@click.command()
@option("--model", "models", multiple=True, help="Registered model name (repeatable).")
@option(
    "--bindings",
    "bindings_file",
    type=click.Path(path_type=Path),
    help="Monitor every model bound in this bindings file (with or instead of --model).",
)
@option(
    "--window",
    "window_length",
    type=DURATION,
    help="Window length (e.g. 15m): the last complete window of that "
    "length, aligned to multiples of it, so re-running replaces the same run.",
)
@option("--start", help="Window start (ISO-8601, UTC unless stated, or unix seconds); with --end.")
@option("--end", help="Window end (exclusive); with --start.")
@tracking_uri_option()
@option("--prediction-log-url", help="SQLAlchemy URL of the prediction log.")
@option("--config", "monitor_config", type=click.Path(path_type=Path), help="Monitoring config YAML.")
@option("--retrain/--no-retrain", default=None, help="Launch retrainings when a policy fires.")
@option("--retrain-dir", type=click.Path(path_type=Path), help="Folder for retraining configs and logs.")
@option("--every", type=DURATION, help="Repeat every interval (e.g. 60s) until stopped; needs --window.")
@log_level_option()
@reports_errors(mlflow=MONITOR_BOUNDS)
def monitor(
    *,
    models: tuple[str, ...],
    bindings_file: Path | None,
    window_length: float | None,
    start: str | None,
    end: str | None,
    every: float | None,
    **flags: Any,  # click's values of the settings flags, typed by MonitorSettings
) -> None:
    """Measure drift and quality of each model over a window, write it to MLflow, maybe retrain."""
    from modelloop.monitoring.settings import MonitorSettings

    schedule = _schedule(
        models, bindings_file=bindings_file, window_length=window_length, start=start, end=end, every=every
    )
    settings = MonitorSettings(**{k: v for k, v in flags.items() if v is not None})
    configure_logging(settings.log_level, settings.log_format)
    wired = _wire(settings, schedule)
    try:
        measured = _run(wired, schedule)
    finally:
        wired.store.close()
    if not measured:
        raise SystemExit(1)
