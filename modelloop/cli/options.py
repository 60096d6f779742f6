"""The options every command writes the same way: one duration type, one way of showing defaults, the shared
`--tracking-uri` and `--log-level` flags.

- `DURATION`: `12s`, `15m`, `1h`, `2d`, or a bare number of seconds (`modelloop.contract.durations`); the
  command receives seconds as a float.
- `option(...)`: `click.option` that shows its default in `--help` as `[default: X]`. Options whose value
  comes from a settings class (so that `MODELLOOP_*` variables apply when the flag is absent) keep
  `default=None` and name the settings field with `setting=(Settings, "field")`: `--help` then shows that
  field's real default, written like the flag's own values (`30s`, not `30.0`).
- `tracking_uri_option()` says what the URI falls back to; `log_level_option(default)` is the same
  `--log-level` on every long-running command.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click
from pydantic import BaseModel

from modelloop.contract.durations import EXAMPLES, format_duration, parse_duration
from modelloop.contract.errors import InvalidInputError
from modelloop.contract.settings import DEFAULT_TRACKING_URI, MLFLOW_TRACKING_URI_ENV

F = TypeVar("F", bound=Callable[..., Any])

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
#: what `--tracking-uri` falls back to, highest first (`modelloop.contract.settings`)
TRACKING_URI_FALLBACK = (
    f"$MODELLOOP_TRACKING_URI, else ${MLFLOW_TRACKING_URI_ENV}, else {DEFAULT_TRACKING_URI}"
)


if TYPE_CHECKING:  # generic in click's stubs from 8.2; plain at run time for click 8.1
    _ParamType = click.ParamType[float, Any]
else:
    _ParamType = click.ParamType


class DurationType(_ParamType):
    """A duration flag (see the module docstring): seconds as a float, more than 0 (or at least 0)."""

    name = "duration"

    def __init__(self, *, allow_zero: bool = False) -> None:
        self.allow_zero = allow_zero

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, float):
            return value
        try:
            return parse_duration(value, allow_zero=self.allow_zero)
        except InvalidInputError as exc:
            self.fail(str(exc), param, ctx)

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "DURATION"

    def __repr__(self) -> str:
        return "DURATION"


DURATION = DurationType()
#: a duration that may be 0 (e.g. no grace period)
DURATION_OR_ZERO = DurationType(allow_zero=True)


class ShownDefault(click.Option):
    """An option whose `--help` says `[default: X]`, also when X is text standing for a settings default
    (click would put that text in parentheses)."""

    def get_help_extra(self, ctx: click.Context) -> Any:
        extra = super().get_help_extra(ctx)
        if isinstance(self.show_default, str):
            extra["default"] = self.show_default
        return extra


def shown(value: object, *, duration: bool = False) -> str:
    """How `--help` writes a default value."""
    if duration and isinstance(value, int | float):
        return format_duration(float(value))
    return str(value)


def setting_default(setting: tuple[type[BaseModel], str], *, duration: bool = False) -> str:
    """The default of a settings field, as `--help` shows it."""
    cls, name = setting
    field = cls.model_fields[name]
    value = field.get_default(call_default_factory=True)
    if isinstance(value, bool):
        return "yes" if value else "no"
    return shown(value, duration=duration)


def option(
    *decls: str,
    setting: tuple[type[BaseModel], str] | None = None,
    **kwargs: Any,
) -> Callable[[F], F]:
    """`click.option` with its default shown (see the module docstring)."""
    duration = isinstance(kwargs.get("type"), DurationType)
    if setting is not None:
        kwargs.setdefault("show_default", setting_default(setting, duration=duration))
    elif duration and "default" in kwargs and kwargs["default"] is not None:
        kwargs.setdefault("show_default", shown(kwargs["default"], duration=True))
    else:
        kwargs.setdefault("show_default", True)
    return click.option(*decls, cls=ShownDefault, **kwargs)


def tracking_uri_option() -> Callable[[F], F]:
    """`--tracking-uri`, saying what it falls back to."""
    return option(
        "--tracking-uri",
        help="MLflow tracking URI (the registry is on the same server).",
        show_default=TRACKING_URI_FALLBACK,
    )


def log_level_option(default: str = "INFO", *, from_env: bool = True) -> Callable[[F], F]:
    """`--log-level`; absent, `$MODELLOOP_LOG_LEVEL` (when the command reads its settings) or `default`."""
    return option(
        "--log-level",
        type=click.Choice(LOG_LEVELS),
        help="Least severe log messages shown.",
        default=None if from_env else default,
        show_default=f"$MODELLOOP_LOG_LEVEL, else {default}" if from_env else default,
    )


__all__ = [
    "DURATION",
    "DURATION_OR_ZERO",
    "EXAMPLES",
    "LOG_LEVELS",
    "TRACKING_URI_FALLBACK",
    "DurationType",
    "ShownDefault",
    "log_level_option",
    "option",
    "setting_default",
    "shown",
    "tracking_uri_option",
]
