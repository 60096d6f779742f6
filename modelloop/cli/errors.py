"""How the CLI turns modelloop's errors into one clear line and an exit code (the one place it does)."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import click

from modelloop.errors import ConfigError, InvalidInputError, ModelloopError, NotFoundError, UnavailableError

P = ParamSpec("P")
R = TypeVar("R")

log = logging.getLogger(__name__)

EXIT_CODES: dict[type[ModelloopError], int] = {
    ConfigError: 2,
    InvalidInputError: 2,
    NotFoundError: 3,
    UnavailableError: 4,
}


def exit_code_for(exc: ModelloopError) -> int:
    """The process exit code for a modelloop error (1 when no finer code applies)."""
    for cls in type(exc).__mro__:
        if cls in EXIT_CODES:
            return EXIT_CODES[cls]
    return 1


def reports_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Decorate a command: a ModelloopError prints `error: <message>` and exits with its code."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except ModelloopError as exc:
            log.debug("command failed", exc_info=True)
            click.echo(f"error: {exc}", err=True)
            raise SystemExit(exit_code_for(exc)) from None

    return wrapper


__all__ = ["EXIT_CODES", "exit_code_for", "reports_errors"]
