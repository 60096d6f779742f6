"""The one place where modelloop's errors become gRPC status codes (server side) and back (client side).

    OversizedInputError          RESOURCE_EXHAUSTED
    InvalidInputError/ConfigError INVALID_ARGUMENT
    NotFoundError                NOT_FOUND
    UnavailableError             UNAVAILABLE
    ModelLoadError               FAILED_PRECONDITION
    anything else                INTERNAL with a generic message; the details go to the server log

Messages of modelloop errors are written for people and never hold request data, so they are passed on.
Client side, the codes map back (`error_for`); grpc's own RESOURCE_EXHAUSTED for the concurrency limit is
overload, so it becomes UnavailableError (retry), not OversizedInputError.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from modelloop.errors import (
    ConfigError,
    InvalidInputError,
    ModelloopError,
    NotFoundError,
    UnavailableError,
)

from .errors import ModelLoadError, OversizedInputError

log = logging.getLogger(__name__)

_TO_CODE: tuple[tuple[type[ModelloopError], grpc.StatusCode], ...] = (
    (OversizedInputError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (InvalidInputError, grpc.StatusCode.INVALID_ARGUMENT),
    (ConfigError, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFoundError, grpc.StatusCode.NOT_FOUND),
    (UnavailableError, grpc.StatusCode.UNAVAILABLE),
    (ModelLoadError, grpc.StatusCode.FAILED_PRECONDITION),
)

_FROM_CODE: dict[grpc.StatusCode, type[ModelloopError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidInputError,
    grpc.StatusCode.OUT_OF_RANGE: InvalidInputError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: OversizedInputError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: UnavailableError,
    grpc.StatusCode.CANCELLED: UnavailableError,
    grpc.StatusCode.FAILED_PRECONDITION: ModelLoadError,
    grpc.StatusCode.UNAUTHENTICATED: ConfigError,
    grpc.StatusCode.PERMISSION_DENIED: ConfigError,
}

#: the details grpc core gives when a server's `maximum_concurrent_rpcs` is reached
_CONCURRENCY_LIMIT = "Concurrent RPC limit exceeded"

INTERNAL_MESSAGE = "internal error while handling the request; the details are in the server log"


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and message a failed call answers with."""
    for cls, code in _TO_CODE:
        if isinstance(exc, cls):
            return code, str(exc)
    return grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE


def error_for(code: grpc.StatusCode, details: str | None) -> ModelloopError:
    """The modelloop error a client raises for a failed call."""
    cls = _FROM_CODE.get(code, ModelloopError)
    message = details or code.name
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and _CONCURRENCY_LIMIT in message:
        # grpc's own answer when `max_concurrent_rpcs` calls are in flight: overload, worth a retry
        return UnavailableError(f"the scoring server is at its concurrency limit; retry later ({message})")
    if code == grpc.StatusCode.UNAUTHENTICATED:
        message = f"not authenticated by the scoring server: {message}"
    return cls(message)


M = TypeVar("M", bound=Callable[..., Awaitable[Any]])


def maps_errors(method: M) -> M:
    """Decorate an async servicer method: errors abort the call with the mapped status."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            return await method(self, request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            code, message = status_for(exc)
            if code == grpc.StatusCode.INTERNAL:
                log.error("%s failed", method.__name__, exc_info=True)
            await context.abort(code, message)

    return wrapper  # type: ignore[return-value]


__all__ = ["INTERNAL_MESSAGE", "error_for", "maps_errors", "status_for"]
