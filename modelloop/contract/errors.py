"""The root of modelloop's exception tree, shared by every part.

    ModelloopError                 anything modelloop raises on purpose; its message is safe to show a user
    ├── ConfigError                a config, bindings or settings file is wrong (names the field)
    ├── InvalidInputError          data sent to modelloop is wrong (names the column, never echoes the data)
    ├── NotFoundError              a model, version, alias, run or artifact does not exist
    ├── UnavailableError           an outside system (MLflow, a database, a cluster) cannot be reached now;
    │                              `retry_after` suggests when to try again
    └── ModelLoadError             a registered version exists but cannot be loaded or warmed up

Each part derives its own errors from these, so callers (the CLI, the gRPC interceptor, the controller)
can map them in one place: ConfigError/InvalidInputError → exit 2 or INVALID_ARGUMENT, NotFoundError →
NOT_FOUND, UnavailableError → retry later or UNAVAILABLE.

What a message may show: caller strings (model names, versions, aliases, column names, request ids) only
through `clip` (one string) or `clip_names` (a list), so a message never grows with what a caller sent (a
10 kB model name comes back as its first 64 characters and `…`); URIs only through `public_uri`, which drops
the user and password they may carry.
"""

from __future__ import annotations

from collections.abc import Iterable

#: most characters of one caller string an error message shows
CLIP_LENGTH = 64
#: appended where a caller string was cut
CLIP_MARK = "\u2026"
#: most names a list in an error message shows before "and N more"
CLIP_NAMES = 5


def clip(text: object, limit: int = CLIP_LENGTH) -> str:
    """`text` as an error message may show it: at most `limit` characters, then `CLIP_MARK` when it was cut;
    control characters (a newline would break a one-line error) shown as `?`."""
    value = str(text)
    shown = value[:limit]
    if not shown.isprintable():
        shown = "".join(c if c.isprintable() else "?" for c in shown)
    return shown + CLIP_MARK if len(value) > limit else shown


def clip_names(names: Iterable[object], *, most: int = CLIP_NAMES) -> str:
    """Names joined by `, `, each through `clip`, at most `most` of them and then `and N more`."""
    listed = list(names)
    shown = ", ".join(clip(n) for n in listed[:most])
    return f"{shown} and {len(listed) - most} more" if len(listed) > most else shown


def public_uri(uri: str) -> str:
    """`uri` fit for a message or a log line: without the user and password it may carry."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(uri)
        if parts.username is None and parts.password is None:
            return uri
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
    except ValueError:  # a malformed port or netloc: show the scheme only
        return uri.split("://", 1)[0] + "://…" if "://" in uri else "…"
    return urlunsplit(parts._replace(netloc=netloc))


class ModelloopError(Exception):
    """Anything modelloop raises on purpose. The message is meant for a person and never holds user data."""


class ConfigError(ModelloopError):
    """A configuration value is wrong; the message names the field."""


class InvalidInputError(ModelloopError):
    """Input data is wrong; the message names the column or field and the problem, never the data."""


class NotFoundError(ModelloopError):
    """A named thing (model, version, alias, run, artifact) does not exist."""


class UnavailableError(ModelloopError):
    """An outside system cannot be reached now; retrying later may succeed."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ModelLoadError(ModelloopError):
    """A registered version exists but could not be loaded or warmed up; whatever served before keeps serving.

    `cause` names what went wrong underneath (an exception type such as `MlflowException`), never its text."""

    def __init__(self, message: str, *, cause: str = "") -> None:
        super().__init__(message)
        self.cause = cause


__all__ = [
    "CLIP_LENGTH",
    "CLIP_MARK",
    "CLIP_NAMES",
    "ConfigError",
    "InvalidInputError",
    "ModelLoadError",
    "ModelloopError",
    "NotFoundError",
    "UnavailableError",
    "clip",
    "clip_names",
    "public_uri",
]
