"""SIGTERM unwinds a process like Ctrl-C does, so its `finally` and `except` blocks run.

Python's default SIGTERM handling ends the process at once, without unwinding: a training's parent run would
stay RUNNING in MLflow, a batch shard's half-written part would stay on disk. `sigterm_interrupts(kind)` makes
SIGTERM raise `kind` (an `Interrupted`, itself a `KeyboardInterrupt`) in the main thread for the duration of
the block. The first SIGTERM interrupts; later ones are ignored while the process unwinds (a launcher or a
kubelet repeating it must not cut the clean-up short; SIGKILL still ends it). Outside the main thread
nothing is installed (signals only reach the main thread). The previous handler is restored afterwards.
Used by `training.interrupts` (a training) and `modelloop score` (a batch shard).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


class Interrupted(KeyboardInterrupt):
    """The process was asked to stop (SIGTERM)."""


@contextmanager
def sigterm_interrupts(kind: type[Interrupted] = Interrupted) -> Iterator[None]:
    """SIGTERM raises `kind` inside the block (main thread only; see the module docstring)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, _frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once: the unwinding is not interrupted again
        raise kind(f"stopped by signal {signal.Signals(signum).name}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


__all__ = ["Interrupted", "sigterm_interrupts"]
