"""`modelloop feedback`: record ground-truth labels for logged predictions, one by flag or many from a CSV."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from modelloop.cli.errors import reports_errors
from modelloop.contract.errors import InvalidInputError
from modelloop.contract.logs import configure_logging


@click.command()
@click.option("--request-id", help="The request id the scoring server logged.")
@click.option("--label", help="The true label (integers and numbers are stored as such).")
@click.option(
    "--file", "csv_file", type=click.Path(path_type=Path), help="CSV with columns request_id,label."
)
@click.option("--model", "model_name", help="Model the labels belong to (optional).")
@click.option("--prediction-log-url", help="SQLAlchemy URL of the prediction log.")
@reports_errors
def feedback(
    request_id: str | None,
    label: str | None,
    csv_file: Path | None,
    model_name: str | None,
    prediction_log_url: str | None,
) -> None:
    """Record ground-truth labels for logged predictions (keyed by request id)."""
    from modelloop.contract.predlog import Feedback, open_prediction_log
    from modelloop.monitoring.feedback import parse_label, read_labels_csv, record_feedback
    from modelloop.monitoring.settings import MonitorSettings

    if (csv_file is None) == (request_id is None and label is None):
        raise InvalidInputError("give either --file or --request-id with --label")
    if csv_file is None and (request_id is None or label is None):
        raise InvalidInputError("--request-id and --label go together")
    overrides: dict[str, Any] = {"prediction_log_url": prediction_log_url} if prediction_log_url else {}
    settings = MonitorSettings(**overrides)
    configure_logging(settings.log_level, settings.log_format)
    if csv_file is not None:
        records = read_labels_csv(csv_file, model_name=model_name)
    else:
        assert request_id is not None and label is not None
        records = [Feedback(request_id, parse_label(label), model_name)]
    store = open_prediction_log(settings.resolved_prediction_log_url())
    try:
        written = record_feedback(store, records)
    finally:
        store.close()
    click.echo(f"recorded {written} label(s)")
