"""`modelloop train`: parse the settings and the training config once, run the training, print the result.

With `--workers N` the trials run in N worker processes on one study (one progress line per trial of every
worker) and this process finishes the training once; `--tune-and-finish` is a pod of the tuning Job.
Prints progress and the summary table on stderr (it hands the training a `StreamProgress` on stderr; the
training itself prints nothing), and on stdout the run id, the version, the gate's verdict (its reasons too
with `--quiet`: otherwise the table gave them), the alias moved, a distilled student's version, gate and
single-row latency as served (measured with serving's loader: `cli.served_latency`), and where to open the
run in the MLflow UI.
Errors become one `error: ...` line and an exit code (`modelloop.cli.errors`).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from modelloop.cli.errors import reports_errors
from modelloop.cli.options import log_level_option, option, tracking_uri_option
from modelloop.contract.logs import configure_logging
from modelloop.contract.settings import CommonSettings

if TYPE_CHECKING:
    from modelloop.training.distill import Distilled


def ui_url(tracking_uri: str, experiment_id: str, run_id: str) -> str | None:
    """The MLflow UI page of a run (None when the tracking URI is not an MLflow server)."""
    from modelloop.adapters.mlflow_ui import run_url

    if not tracking_uri.startswith(("http://", "https://")):
        return None
    return run_url(tracking_uri, experiment_id, run_id)


@click.command(context_settings={"show_default": True})
@option(
    "--config", "config_path", required=True, type=click.Path(path_type=Path), help="Training config (YAML)."
)
@tracking_uri_option()
@option("--triggered-by", show_default="none", help="Id of the monitoring run that asked for this training.")
@option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY.PATH=VALUE",
    help="Override a config value (repeatable).",
)
@option("--tune-only", is_flag=True, help="Only add trials to a shared study (a worker); do not register.")
@option(
    "--workers",
    type=click.IntRange(min=1, max=256),
    show_default="the config's study.workers",
    help="Processes tuning the study at once (this process is one of them, and finishes).",
)
@option(
    "--tune-and-finish",
    is_flag=True,
    help="A pod of a tuning Job: add trials to the shared study, then finish once: the pod holding the "
    "study's finishing lock refits, gates and registers; the others wait and report that version.",
)
@option("--quiet", is_flag=True, help="No progress or summary on stderr (warnings and errors only).")
@log_level_option()
@reports_errors
def train(
    *,
    config_path: Path,
    tracking_uri: str | None,
    triggered_by: str | None,
    overrides: tuple[str, ...],
    tune_only: bool,
    workers: int | None,
    tune_and_finish: bool,
    quiet: bool,
    log_level: str | None,
) -> None:
    """Tune, record and register a model from a training config."""
    import optuna

    from modelloop.cli.served_latency import served_latency_ms
    from modelloop.training import StreamProgress, load_config, run_training

    given: dict[str, Any] = {"tracking_uri": tracking_uri, "log_level": log_level}
    settings = CommonSettings(**{k: v for k, v in given.items() if v is not None})
    configure_logging(
        "WARNING" if quiet and settings.log_level == "INFO" else settings.log_level, settings.log_format
    )
    optuna.logging.disable_default_handler()  # our own progress lines replace Optuna's
    if quiet:
        logging.getLogger("mlflow").setLevel(logging.WARNING)  # MLflow's own "View run at" lines
    # fail fast when MLflow is down instead of retrying for minutes
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")
    extra = [f"study.workers={workers}"] if workers is not None else []
    config = load_config(config_path, [*overrides, *extra])
    result = run_training(
        config,
        tracking_uri=settings.tracking_uri,
        triggered_by=triggered_by,
        progress=None if quiet else StreamProgress(sys.stderr),
        tune_only=tune_only,
        finish_if_first=tune_and_finish,
        config_source=str(config_path),
        served_latency=served_latency_ms(settings.tracking_uri),
    )
    click.echo(f"run_id: {result.run_id}")
    if result.version is None:
        click.echo(f"tuned {result.trials_run} trials of the shared study (worker; nothing registered)")
    elif result.gate_passed is None:
        click.echo(f"model: {result.model_name} version {result.version} (registered before; nothing to do)")
    else:
        click.echo(f"model: {result.model_name} version {result.version}")
        verdict = "passed" if result.gate_passed else "failed"
        # the summary table on stderr gave the gate's reasons already; said once, on stdout, when quiet
        click.echo(f"gate: {verdict} ({'; '.join(result.gate_reasons)})" if quiet else f"gate: {verdict}")
        click.echo(f"alias: {result.promoted_alias or '-'}")
        if result.student is not None:
            click.echo(f"student: {_student_line(result.student)}")
    url = ui_url(settings.tracking_uri, result.experiment_id, result.run_id) if result.experiment_id else None
    if url:
        click.echo(f"mlflow ui: {url}")


def _student_line(student: Distilled) -> str:
    """The distilled student in a line: its version, its gate, and one row's latency as served."""
    gate = "passed" if student.gate_passed else "failed"
    text = f"{student.model_name} version {student.version} (gate {gate})"
    teacher_ms, student_ms = student.teacher_served_ms, student.student_served_ms
    if teacher_ms is not None and student_ms is not None and student_ms > 0:
        text += (
            f"; one row as served: {student_ms:.3f} ms against the teacher's {teacher_ms:.3f} ms "
            f"({teacher_ms / student_ms:.1f}x)"
        )
    return text
