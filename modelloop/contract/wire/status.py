"""Which modelloop error travels as which gRPC status code, both ways: the table callers and servers share.

    error (server raises)             code                 error (client raises)
    OversizedInputError               RESOURCE_EXHAUSTED   OversizedInputError (UnavailableError when it is
                                                           grpc's own concurrency limit: overload, retry)
    InvalidInputError, ConfigError    INVALID_ARGUMENT     InvalidInputError (OUT_OF_RANGE too)
    NotFoundError                     NOT_FOUND            NotFoundError
    UnavailableError                  UNAVAILABLE          UnavailableError (DEADLINE_EXCEEDED, CANCELLED too)
    ModelLoadError                    FAILED_PRECONDITION  ModelLoadError
    anything else                     INTERNAL             ModelloopError (any other code too)
    (bearer token missing or wrong)   UNAUTHENTICATED      ConfigError (PERMISSION_DENIED too)

The server direction is `modelloop.serving.status` (which also logs the details of INTERNAL); this module
holds the client direction (`error_for`) and the bound both sides put on a message: `bounded_details` cuts
it to `MAX_DETAILS_BYTES` of UTF-8, because gRPC sends it percent-encoded in the `grpc-message` header and a
header over the peer's metadata limit (8 KiB soft) would turn the real code into RESOURCE_EXHAUSTED.
"""

from __future__ import annotations

import grpc

from modelloop.contract.errors import (
    CLIP_MARK,
    ConfigError,
    InvalidInputError,
    ModelLoadError,
    ModelloopError,
    NotFoundError,
    UnavailableError,
)

from .errors import OversizedInputError

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


__all__ = ["MAX_DETAILS_BYTES", "bounded_details", "error_for"]
