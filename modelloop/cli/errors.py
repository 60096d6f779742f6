"""How a CLI command fails: one clear line, an exit code, and soon (the one place that decides it).

`reports_errors` wraps every command. A `ModelloopError` prints `error: <message>` and exits with its code
(`EXIT_CODES`); what a library raises instead (MLflow, pydantic, the OS) is said in one line too, never as
a traceback (`MODELLOOP_LOG_LEVEL=DEBUG` logs it). Before the command runs, the wrapper bounds MLflow's HTTP
client (`MlflowBounds`): MLflow's own default retries 7 times with a 120 s timeout, about 4 minutes before
an unreachable server is reported, which is what made `modelloop serve` take 248 s to fail.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import ParamSpec, TypeVar, overload

import click

from modelloop.contract.errors import (
    ConfigError,
    InvalidInputError,
    ModelloopError,
    NotFoundError,
    UnavailableError,
)

P = ParamSpec("P")
R = TypeVar("R")

log = logging.getLogger(__name__)

EXIT_CODES: dict[type[ModelloopError], int] = {
    ConfigError: 2,
    InvalidInputError: 2,
    NotFoundError: 3,
    UnavailableError: 4,
}
#: most characters of a library's message on the error line (its first line only)
MESSAGE_LIMIT = 240
#: most characters of a modelloop error's message (written for people; caller strings in it are clipped)
OWN_LIMIT = 600
#: `NAME=VALUE,...` of the MLflow HTTP variables modelloop itself set (inherited by child processes, which
#: may set their own bounds over them; a value changed since is the user's)
BOUNDS_SET_BY_MODELLOOP = "MODELLOOP_MLFLOW_HTTP_DEFAULTS"


@dataclass(frozen=True)
class MlflowBounds:
    """How long MLflow's HTTP client may take before a call fails: `retries` more attempts with backoff
    (`backoff_factor` x 2^n seconds, plus up to 1 s jitter) and `timeout` seconds per connect or read.

    `applied()` sets `MLFLOW_HTTP_REQUEST_MAX_RETRIES`, `..._BACKOFF_FACTOR` and `..._TIMEOUT` while a command
    runs; a value the user set in the environment wins, a value a parent modelloop process set does not.
    """

    retries: int = 2
    backoff_factor: int = 1
    timeout: int = 60

    def environment(self) -> dict[str, str]:
        return {
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(self.retries),
            "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": str(self.backoff_factor),
            "MLFLOW_HTTP_REQUEST_TIMEOUT": str(self.timeout),
        }

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """Set the variables for the duration of a command (and the processes it starts), then restore them;
        a value found in the environment wins unless a parent modelloop process put it there."""
        ours = dict(
            p.split("=", 1) for p in os.environ.get(BOUNDS_SET_BY_MODELLOOP, "").split(",") if "=" in p
        )
        saved = {name: os.environ.get(name) for name in [*self.environment(), BOUNDS_SET_BY_MODELLOOP]}
        for name, value in self.environment().items():
            current = os.environ.get(name)
            if current is not None and ours.get(name) != current:
                continue  # the user's own setting
            os.environ[name] = ours[name] = value
        os.environ[BOUNDS_SET_BY_MODELLOOP] = ",".join(f"{k}={v}" for k, v in sorted(ours.items()))
        try:
            yield
        finally:
            for name, previous in saved.items():
                if previous is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = previous


#: short commands (train, webhook register, feedback): a closed port fails in about 3 s, a silent host in
#: about 3 minutes; long-running processes choose tighter bounds
COMMAND_BOUNDS = MlflowBounds()


def exit_code_for(exc: ModelloopError) -> int:
    """The process exit code for a modelloop error (1 when no finer code applies)."""
    for cls in type(exc).__mro__:
        if cls in EXIT_CODES:
            return EXIT_CODES[cls]
    return 1


def one_line(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """The first line of `text`, at most `limit` characters."""
    first = text.strip().splitlines()[0].strip() if text.strip() else ""
    return first if len(first) <= limit else first[: limit - 1] + "\u2026"


_MLFLOW_URL = re.compile(r"API request to (\w+://[^/\s]+)")
_UNSUPPORTED = re.compile(r"unsupported URI '([^']{1,120})'")
_UNREACHABLE = ("Max retries exceeded", "Connection refused", "Failed to establish", "timed out")


def describe(exc: Exception) -> tuple[str, int]:
    """(one-line message, exit code) for any exception a command lets through."""
    if isinstance(exc, ModelloopError):  # written for people: every line of it, joined
        return one_line("; ".join(line.strip() for line in str(exc).splitlines()), OWN_LIMIT), exit_code_for(
            exc
        )
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        return one_line(f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"), 2
    if any(cls.__module__.startswith("mlflow.") for cls in type(exc).__mro__):
        return _describe_mlflow(exc)
    if isinstance(exc, OSError):
        where = f": {exc.filename}" if exc.filename else ""
        return one_line(f"{exc.strerror or type(exc).__name__}{where}"), 1
    return one_line(f"unexpected {type(exc).__name__}: {exc}"), 1


def _describe_mlflow(exc: Exception) -> tuple[str, int]:
    text = str(exc)
    code = str(getattr(exc, "error_code", ""))
    if code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"):
        return one_line(text), 3
    if any(marker in text for marker in _UNREACHABLE):
        found = _MLFLOW_URL.search(text)
        where = re.sub(r"//[^/@]*@", "//", found.group(1)) if found else "the tracking URI"  # no credentials
        return f"MLflow at {where} unreachable", 4
    if "unsupported URI" in text or "registered tracking store" in text:
        found = _UNSUPPORTED.search(text)
        uri = f" {found.group(1)}" if found else ""
        return one_line(f"the tracking URI{uri} is not one MLflow supports"), 2
    return one_line(f"MLflow: {text}"), 1


@overload
def reports_errors(func: Callable[P, R], /) -> Callable[P, R]: ...


@overload
def reports_errors(
    *, mlflow: MlflowBounds = COMMAND_BOUNDS
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...


def reports_errors(
    func: Callable[P, R] | None = None, /, *, mlflow: MlflowBounds = COMMAND_BOUNDS
) -> Callable[P, R] | Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate a command (`@reports_errors`, or `@reports_errors(mlflow=MlflowBounds(...))`): MLflow's
    client is bounded before it runs, and any error prints one `error: <message>` line and exits with its
    code (see the module docstring)."""

    def decorate(command: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(command)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                with mlflow.applied():
                    return command(*args, **kwargs)
            except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
                raise  # click's own: usage errors say it in a line or two, Exit and Abort are not errors
            except Exception as exc:
                log.debug("command failed", exc_info=True)
                message, code = describe(exc)
                click.echo(f"error: {message}", err=True)
                raise SystemExit(code) from None

        return wrapper

    return decorate if func is None else decorate(func)


__all__ = [
    "BOUNDS_SET_BY_MODELLOOP",
    "COMMAND_BOUNDS",
    "EXIT_CODES",
    "MESSAGE_LIMIT",
    "OWN_LIMIT",
    "MlflowBounds",
    "describe",
    "exit_code_for",
    "one_line",
    "reports_errors",
]
