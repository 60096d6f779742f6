"""The one place where modelloop's errors become gRPC status codes (server side) and back (client side).

    OversizedInputError          RESOURCE_EXHAUSTED
    InvalidInputError/ConfigError INVALID_ARGUMENT
    NotFoundError                NOT_FOUND
    UnavailableError             UNAVAILABLE
    ModelLoadError               FAILED_PRECONDITION
    anything else                INTERNAL with a generic message; the details go to the server log

Messages of modelloop errors are written for people and never hold request data, so they are passed on;
caller strings in them are cut by `serving.errors.clip`, and the whole message by `bounded_details` to
`MAX_DETAILS_BYTES` (UTF-8): gRPC sends it percent-encoded in the `grpc-message` header, and a header over
the peer's metadata limit (8 KiB soft) would turn the real code into RESOURCE_EXHAUSTED.
Client side, the codes map back (`error_for`); grpc's own RESOURCE_EXHAUSTED for the concurrency limit is
overload, so it becomes UnavailableError (retry), not OversizedInputError.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from modelloop.contract.errors import (
    ConfigError,
    InvalidInputError,
    ModelloopError,
    NotFoundError,
    UnavailableError,
)

from .errors import CLIP_MARK, ModelLoadError, OversizedInputError

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

#: most UTF-8 bytes of a status message; percent-encoded (at most 3 bytes each) it stays far below the
#: 8 KiB soft limit gRPC puts on a response's metadata
MAX_DETAILS_BYTES = 1024


def bounded_details(message: str, limit: int = MAX_DETAILS_BYTES) -> str:
    """`message` cut to at most `limit` UTF-8 bytes (on a character boundary, ending with `CLIP_MARK`)."""
    encoded = message.encode("utf-8", "replace")
    if len(encoded) <= limit:
        return message
    keep = limit - len(CLIP_MARK.encode())
    return encoded[:keep].decode("utf-8", "ignore") + CLIP_MARK


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and message a failed call answers with."""
    for cls, code in _TO_CODE:
        if isinstance(exc, cls):
            return code, bounded_details(str(exc))
    return grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE


def error_for(code: grpc.StatusCode, details: str | None) -> ModelloopError:
    """The modelloop error a client raises for a failed call (the details bounded like the server's)."""
    cls = _FROM_CODE.get(code, ModelloopError)
    message = bounded_details(details or code.name)
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


__all__ = [
    "INTERNAL_MESSAGE",
    "MAX_DETAILS_BYTES",
    "bounded_details",
    "error_for",
    "maps_errors",
    "status_for",
]
