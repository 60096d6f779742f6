"""Recording ground-truth labels (feedback) for logged predictions: the small Python API and CSV reading.

Called by `modelloop feedback` and by any service that learns the truth later. Labels are keyed by the
request id the scoring server logged; a later label for the same request replaces the earlier one.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from modelloop.contract.errors import InvalidInputError
from modelloop.contract.predlog import Feedback, PredictionLogStore

MAX_REQUEST_ID = 128


def parse_label(text: str) -> Any:
    """A label from text: an integer, else a finite number, else the text itself."""
    stripped = text.strip()
    try:
        return int(stripped)
    except ValueError:
        pass
    try:
        value = float(stripped)
    except ValueError:
        return stripped
    return value if math.isfinite(value) else stripped


def _check(record: Feedback, where: str) -> Feedback:
    if not record.request_id or len(record.request_id) > MAX_REQUEST_ID:
        raise InvalidInputError(f"{where}: request id must have 1 to {MAX_REQUEST_ID} characters")
    if record.label is None or (isinstance(record.label, str) and not record.label.strip()):
        raise InvalidInputError(f"{where}: label is empty")
    if isinstance(record.label, float) and not math.isfinite(record.label):
        raise InvalidInputError(f"{where}: label must be a finite number")
    return record


def record_feedback(
    store: PredictionLogStore,
    labels: Mapping[str, Any] | Iterable[Feedback],
    *,
    model_name: str | None = None,
) -> int:
    """Store labels by request id (a mapping request id -> label, or `Feedback` records); all or nothing:
    every record is checked before any is written. Returns how many were written."""
    items = (
        [Feedback(str(k), v, model_name) for k, v in labels.items()]
        if isinstance(labels, Mapping)
        else [Feedback(r.request_id, r.label, r.model_name or model_name, r.time) for r in labels]
    )
    checked = [_check(r, f"feedback record {i + 1}") for i, r in enumerate(items)]
    return store.add_feedback(checked)


def read_labels_csv(path: Path, *, model_name: str | None = None) -> list[Feedback]:
    """Read `request_id,label` rows (a header row naming both columns; an optional `model` column)."""
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            fields = set(reader.fieldnames or [])
            if not {"request_id", "label"} <= fields:
                raise InvalidInputError(f"{path}: the header must name the columns request_id and label")
            out = []
            for line, row in enumerate(reader, start=2):
                rid, label = row.get("request_id"), row.get("label")
                if rid is None or label is None:
                    raise InvalidInputError(f"{path} line {line}: missing request_id or label")
                record = Feedback(rid.strip(), parse_label(label), row.get("model") or model_name)
                out.append(_check(record, f"{path} line {line}"))
    except OSError as exc:
        raise InvalidInputError(f"cannot read {path}: {exc.strerror}") from None
    except (UnicodeDecodeError, csv.Error):
        raise InvalidInputError(f"{path} is not a UTF-8 CSV file") from None
    return out


__all__ = ["parse_label", "read_labels_csv", "record_feedback"]
