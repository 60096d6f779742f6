"""Progress while tuning (trial n of N, best so far) and the summary table at the end.

`TrainingProgress` is what a training tells whoever watches it; the training run calls it and prints nothing
itself. `StreamProgress` writes it to a stream the caller chooses (`modelloop train` passes stderr);
`TuningProgress` is the Optuna callback behind its trial lines; `summary_table` formats the outcome of a
training for people (the CLI prints the machine-readable result on stdout separately). While a
`TrainingProgress` reports the trials, `quiet_optuna` keeps Optuna's own `[I ...] Trial N finished` lines out
(one line per trial, not two).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Protocol, TextIO

import optuna


class TuningProgress:
    """Prints one line per finished trial: its number of N, its score or state, and the best so far."""

    def __init__(self, *, metric: str, total: int | None, stream: TextIO) -> None:
        self._metric = metric
        self._total = total
        self._stream = stream
        self._lock = threading.Lock()

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        of = f"/{self._total}" if self._total else ""
        if trial.state == optuna.trial.TrialState.COMPLETE:
            outcome = f"{self._metric}={trial.value:.4f}"
        else:
            outcome = trial.state.name.lower()
        try:
            best = study.best_trial
            best_text = f"best={best.value:.4f} (trial {best.number})"
        except ValueError:
            best_text = "best=-"
        with self._lock:
            print(f"trial {trial.number + 1}{of}  {outcome:<22} {best_text}", file=self._stream, flush=True)


class TrainingProgress(Protocol):
    """What a training reports while it runs. Trial calls may come from several threads at once."""

    def tuning_started(self, *, metric: str, total: int | None) -> None:
        """Tuning begins: `total` trials at most (None: until a time budget runs out)."""

    def trial_finished(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """One trial finished (complete, pruned or failed)."""

    def finished(self, summary: str) -> None:
        """The training registered its version; `summary` is the table of its outcome (`summary_table`)."""


class StreamProgress:
    """`TrainingProgress` as lines on a text stream: one per trial, then the summary table."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._trials: TuningProgress | None = None

    def tuning_started(self, *, metric: str, total: int | None) -> None:
        self._trials = TuningProgress(metric=metric, total=total, stream=self._stream)

    def trial_finished(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if self._trials is not None:
            self._trials(study, trial)

    def finished(self, summary: str) -> None:
        print(summary, file=self._stream, flush=True)


@contextmanager
def quiet_optuna() -> Iterator[None]:
    """Optuna logs warnings and errors only inside the block (its per-trial INFO lines are what the progress
    reports); its previous verbosity is restored afterwards."""
    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(max(before, optuna.logging.WARNING))
    try:
        yield
    finally:
        optuna.logging.set_verbosity(before)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def summary_table(
    *,
    metric: str,
    counts: Mapping[str, int],
    ran_here: int,
    best_number: int,
    best_value: float,
    best_params: Mapping[str, object],
    model_metrics: Mapping[str, float],
    baseline_metrics: Mapping[str, float],
    baseline_name: str,
    production: tuple[str, Mapping[str, float]] | None,
    gate_lines: Sequence[str],
    registered: str,
) -> str:
    """A plain-text table of the training's outcome."""
    lines = [
        f"trials       {sum(counts.values())} in the study "
        f"({counts.get('COMPLETE', 0)} complete, {counts.get('PRUNED', 0)} pruned, "
        f"{counts.get('FAIL', 0)} failed); "
        f"{ran_here} run by this process",
        f"best trial   #{best_number}: validation {metric} = {best_value:.4f}",
        "best params  " + (", ".join(f"{k}={v}" for k, v in best_params.items()) or "-"),
        "",
    ]
    header = ["test metric", "model", f"baseline ({baseline_name})"]
    if production is not None:
        header.append(f"production (v{production[0]})")
    rows = []
    for name in sorted(model_metrics, key=lambda n: (n != metric, n)):
        row = [
            name + (" *" if name == metric else ""),
            _fmt(model_metrics[name]),
            _fmt(baseline_metrics.get(name)),
        ]
        if production is not None:
            row.append(_fmt(production[1].get(name)))
        rows.append(row)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, ["-" * w for w in widths], *rows]:
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    lines.append("")
    lines.extend(gate_lines)
    lines.append(registered)
    return "\n".join(lines)


__all__ = ["StreamProgress", "TrainingProgress", "TuningProgress", "quiet_optuna", "summary_table"]
