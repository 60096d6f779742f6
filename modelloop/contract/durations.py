"""Durations as people write them, one format everywhere: `12s`, `15m`, `1h`, `2d`, or a bare number of
seconds (`90`, `2.5`). Flags take them through the CLI's `DURATION` type (`modelloop.cli.options`); settings
fields take them from the environment through `Duration` (`MODELLOOP_MONITOR_WINDOW=15m`). Both hold
seconds as a float. `format_duration` writes seconds back in the shortest exact form (`900` -> `15m`), the
form `--help` shows defaults in.
"""

from __future__ import annotations

import math
import re
from typing import Annotated

from pydantic import BeforeValidator

from modelloop.contract.errors import InvalidInputError

#: a unit's length in seconds; no unit means seconds
UNIT_SECONDS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])?\s*$")
EXAMPLES = "e.g. 12s, 15m, 1h, or 90 for seconds"


def parse_duration(text: str | float, *, allow_zero: bool = False) -> float:
    """Seconds in `text` (see the module docstring); `InvalidInputError` naming the format otherwise (the
    value itself is not echoed)."""
    if isinstance(text, bool):
        raise InvalidInputError(f"a duration is a number with an optional unit s, m, h or d ({EXAMPLES})")
    if isinstance(text, int | float):
        seconds = float(text)
    else:
        match = _DURATION.match(text)
        if match is None:
            raise InvalidInputError(f"a duration is a number with an optional unit s, m, h or d ({EXAMPLES})")
        seconds = float(match.group(1)) * UNIT_SECONDS[match.group(2) or "s"]
    if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not allow_zero):
        least = "at least" if allow_zero else "more than"
        raise InvalidInputError(f"a duration must be finite and {least} 0 ({EXAMPLES})")
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest exact way to write `seconds`: 900 -> `15m`, 30 -> `30s`, 5400 -> `90m`, 1.5 -> `1.5s`."""
    for unit in ("d", "h", "m"):
        size = UNIT_SECONDS[unit]
        if seconds >= size and float(seconds / size).is_integer():
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def _seconds(value: object) -> object:
    """Pydantic's hook: a string is parsed as a duration; numbers pass on to the field's own checks."""
    if isinstance(value, str):
        try:
            return parse_duration(value, allow_zero=True)
        except InvalidInputError as exc:
            raise ValueError(str(exc)) from None
    return value


#: a settings field holding seconds that also accepts `15m` and the like from the environment
Duration = Annotated[float, BeforeValidator(_seconds)]

__all__ = ["EXAMPLES", "UNIT_SECONDS", "Duration", "format_duration", "parse_duration"]
