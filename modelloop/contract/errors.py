"""The root of modelloop's exception tree, shared by every part.

    ModelloopError                 anything modelloop raises on purpose; its message is safe to show a user
    ├── ConfigError                a config, bindings or settings file is wrong (names the field)
    ├── InvalidInputError          data sent to modelloop is wrong (names the column, never echoes the data)
    ├── NotFoundError              a model, version, alias, run or artifact does not exist
    └── UnavailableError           an outside system (MLflow, a database, a cluster) cannot be reached now;
                                   `retry_after` suggests when to try again

Each part derives its own errors from these, so callers (the CLI, the gRPC interceptor, the controller)
can map them in one place: ConfigError/InvalidInputError → exit 2 or INVALID_ARGUMENT, NotFoundError →
NOT_FOUND, UnavailableError → retry later or UNAVAILABLE.
"""

from __future__ import annotations


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


__all__ = ["ConfigError", "InvalidInputError", "ModelloopError", "NotFoundError", "UnavailableError"]
