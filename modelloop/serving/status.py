"""The server's side of the error <-> status-code table: modelloop's errors become gRPC status codes here.

    OversizedInputError           RESOURCE_EXHAUSTED
    InvalidInputError/ConfigError INVALID_ARGUMENT
    NotFoundError                 NOT_FOUND
    UnavailableError              UNAVAILABLE
    ModelLoadError                FAILED_PRECONDITION
    anything else                 INTERNAL with a generic message; the details go to the server log

The whole table, both directions, is drawn in `modelloop.contract.wire.status`, which also holds the way back
(`error_for`, used by the client) and the bound on a message both sides apply (`bounded_details`). Messages of
modelloop errors are written for people and never hold request data, so they are passed on; caller strings in
them are cut by `contract.errors.clip`, the whole message by `bounded_details`. Every servicer method goes
through `maps_errors`; `ModelInfer` counts each call by the code it ends with (`code_for`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from modelloop.contract.errors import (
    ConfigError,
    InvalidInputError,
    ModelLoadError,
    ModelloopError,
    NotFoundError,
    UnavailableError,
    clip,
)
from modelloop.contract.wire.status import bounded_details

from .errors import OversizedInputError

log = logging.getLogger(__name__)

_TO_CODE: tuple[tuple[type[ModelloopError], grpc.StatusCode], ...] = (
    (OversizedInputError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (InvalidInputError, grpc.StatusCode.INVALID_ARGUMENT),
    (ConfigError, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFoundError, grpc.StatusCode.NOT_FOUND),
    (UnavailableError, grpc.StatusCode.UNAVAILABLE),
    (ModelLoadError, grpc.StatusCode.FAILED_PRECONDITION),
)

INTERNAL_MESSAGE = "internal error while handling the request; the details are in the server log"


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and message a failed call answers with."""
    for cls, code in _TO_CODE:
        if isinstance(exc, cls):
            return code, bounded_details(str(exc))
    return grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE


def code_for(exc: BaseException) -> grpc.StatusCode:
    """The status code a call ending in `exc` answers with (CANCELLED: the caller went away)."""
    if isinstance(exc, asyncio.CancelledError):
        return grpc.StatusCode.CANCELLED
    return status_for(exc)[0]


M = TypeVar("M", bound=Callable[..., Awaitable[Any]])


def maps_errors(method: M) -> M:
    """Decorate an async servicer method: errors abort the call with the mapped status; an INTERNAL one is
    logged with the model the request names (cut by `clip`)."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            return await method(self, request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            code, message = status_for(exc)
            if code == grpc.StatusCode.INTERNAL:
                log.error("%s failed for model %s", method.__name__, _model_of(request), exc_info=True)
            await context.abort(code, message)

    return wrapper  # type: ignore[return-value]


def _model_of(request: Any) -> str:
    for field in ("model_name", "name", "model"):  # OIP inference, OIP model calls, admin calls
        value = getattr(request, field, None)
        if isinstance(value, str) and value:
            return clip(value)
    return "-"


__all__ = ["INTERNAL_MESSAGE", "code_for", "maps_errors", "status_for"]
