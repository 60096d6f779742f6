"""The scoring tier's own errors, derived from `modelloop.contract.errors` so callers map them in one place.

    ModelloopError
    ├── InvalidInputError
    │   └── OversizedInputError     a request exceeds a size limit (rows, bytes) -> RESOURCE_EXHAUSTED
    ├── UnavailableError
    │   └── NotReadyError           the model is loading, draining or the server is stopping -> UNAVAILABLE
    └── ModelLoadError              a version exists but cannot be loaded or warmed up -> FAILED_PRECONDITION
                                    (defined in the contract: the promotion gate meets it too)

`serving.status` maps every one of them to a gRPC status code; `serving.client` maps codes back.

Caller strings (model names, versions, input and column names, aliases, request ids: anything that came in a
request) go into a message only through `clip` (one string) or `clip_names` (a list), both from
`modelloop.contract.errors` (re-exported here for serving's modules), so a message never grows with what a
caller sent: a 10 kB model name comes back as its first 64 characters and `…`. `serving.status`
caps the whole message too, below gRPC's metadata budget.
"""

from __future__ import annotations

from modelloop.contract.errors import (
    CLIP_LENGTH,
    CLIP_MARK,
    CLIP_NAMES,
    InvalidInputError,
    ModelLoadError,
    UnavailableError,
    clip,
    clip_names,
)


class OversizedInputError(InvalidInputError):
    """A request is larger than the configured limit; the message names the limit, not the data."""


class NotReadyError(UnavailableError):
    """The model (or the whole server) cannot answer now; retrying later may succeed."""


__all__ = [
    "CLIP_LENGTH",
    "CLIP_MARK",
    "CLIP_NAMES",
    "ModelLoadError",
    "NotReadyError",
    "OversizedInputError",
    "clip",
    "clip_names",
]
