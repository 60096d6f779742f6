"""A training stopped by SIGTERM ends like one stopped by Ctrl-C: its parent run is closed as KILLED.

`sigterm_interrupts()` (`contract.interrupts`) makes SIGTERM raise `TrainingInterrupted` (a
`KeyboardInterrupt`) in the main thread for the duration of a training, so `training.run` unwinds, flushes
its trial runs, and ends the parent run KILLED (`run_status_for`). Outside the main thread (a training run
from a worker thread, e.g. by the demo) nothing is installed: signals only reach the main thread.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from modelloop.contract import interrupts


class TrainingInterrupted(interrupts.Interrupted):
    """The training process was asked to stop (SIGTERM)."""


@contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """SIGTERM raises `TrainingInterrupted` inside the block (main thread only; see the module docstring)."""
    with interrupts.sigterm_interrupts(TrainingInterrupted):
        yield


def run_status_for(exc: BaseException) -> str:
    """The status a parent run ends with when `exc` stopped the training: KILLED when it was interrupted
    (SIGTERM, Ctrl-C), FAILED otherwise."""
    return "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"


__all__ = ["TrainingInterrupted", "run_status_for", "sigterm_interrupts"]
