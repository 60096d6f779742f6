"""The scoring tier's own errors, derived from `modelloop.errors` so callers map them in one place.

    ModelloopError
    ├── InvalidInputError
    │   └── OversizedInputError     a request exceeds a size limit (rows, bytes) -> RESOURCE_EXHAUSTED
    ├── UnavailableError
    │   └── NotReadyError           the model is loading, draining or the server is stopping -> UNAVAILABLE
    └── ModelLoadError              a version exists but cannot be loaded or warmed up -> FAILED_PRECONDITION

`serving.status` maps every one of them to a gRPC status code; `serving.client` maps codes back.
"""

from __future__ import annotations

from modelloop.errors import InvalidInputError, ModelloopError, UnavailableError


class OversizedInputError(InvalidInputError):
    """A request is larger than the configured limit; the message names the limit, not the data."""


class NotReadyError(UnavailableError):
    """The model (or the whole server) cannot answer now; retrying later may succeed."""


class ModelLoadError(ModelloopError):
    """A registered version could not be loaded or warmed up; whatever served before keeps serving."""


__all__ = ["ModelLoadError", "NotReadyError", "OversizedInputError"]
