"""A training stopped by SIGTERM ends like one stopped by Ctrl-C: its parent run is closed as KILLED.

Python's default SIGTERM handling ends the process at once, without unwinding: `finally` blocks do not run,
and a training's parent run would stay RUNNING in MLflow forever. `sigterm_interrupts()` makes SIGTERM raise
`TrainingInterrupted` (a `KeyboardInterrupt`) in the main thread for the duration of a training, so
`training.run` unwinds, flushes its trial runs, and ends the parent run KILLED (`run_status_for`). Outside the
main thread (a training run from a worker thread, e.g. by the demo) nothing is installed: signals only reach
the main thread. The previous handler is restored afterwards.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


class TrainingInterrupted(KeyboardInterrupt):
    """The training process was asked to stop (SIGTERM)."""


def _raise(signum: int, frame: FrameType | None) -> None:
    raise TrainingInterrupted(f"stopped by signal {signal.Signals(signum).name}")


@contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """SIGTERM raises `TrainingInterrupted` inside the block (main thread only; see the module docstring)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_status_for(exc: BaseException) -> str:
    """The status a parent run ends with when `exc` stopped the training: KILLED when it was interrupted
    (SIGTERM, Ctrl-C), FAILED otherwise."""
    return "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"


__all__ = ["TrainingInterrupted", "run_status_for", "sigterm_interrupts"]
