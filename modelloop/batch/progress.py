"""The progress line of a batch on stderr: rows done, rows/s, and the ETA when the total is known.

Used by `batch.scoring` after every chunk. On a terminal the line is redrawn in place (at most `every` seconds
apart); otherwise (a Job's log) one line is printed per `every` seconds, so a log is not flooded.
`parse_line` reads such a line back (rows done, total): `modelloop score --shards N` run locally sums its
shards' lines into one line of its own (`cli.local_shards`).
"""

from __future__ import annotations

import re
import sys
import time
from typing import TextIO

_LINE = re.compile(r"^scored ([0-9,]+) rows(?: of ([0-9,]+))?")


def parse_line(text: str) -> tuple[int, int | None] | None:
    """(rows done, total or None) of a progress line, None when `text` is not one."""
    found = _LINE.match(text.lstrip("\r"))
    if found is None:
        return None
    total = found.group(2)
    return int(found.group(1).replace(",", "")), int(total.replace(",", "")) if total else None


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class Progress:
    """Rows done of `total` (None when unknown), shown on `stream`; `enabled=False` shows nothing."""

    def __init__(
        self,
        total: int | None,
        *,
        stream: TextIO | None = None,
        enabled: bool = True,
        every: float = 0.5,
        label: str = "scored",
    ) -> None:
        self.total = total
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.every = every
        self.label = label
        self.rows = 0
        self.started = time.monotonic()
        self._shown = 0.0
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = self.rows / elapsed
        text = f"{self.label} {self.rows:,} rows"
        if self.total is not None:  # a shard with no rows says so too: a sum of shards knows its total
            done = 100 * self.rows / self.total if self.total else 100.0
            text += f" of {self.total:,} ({done:.0f}%)"
        text += f", {rate:,.0f} rows/s"
        if self.total and rate > 0 and self.rows < self.total:
            text += f", ETA {_duration((self.total - self.rows) / rate)}"
        return text

    def advance(self, rows: int) -> None:
        self.rows += rows
        now = time.monotonic()
        if self.enabled and now - self._shown >= self.every:
            self._shown = now
            self._show(final=False)

    def done(self) -> None:
        if self.enabled:
            self._show(final=True)

    def _show(self, *, final: bool) -> None:
        if self._tty:
            self.stream.write("\r" + self.line() + ("\n" if final else ""))
        else:
            self.stream.write(self.line() + "\n")
        self.stream.flush()


__all__ = ["Progress", "parse_line"]
