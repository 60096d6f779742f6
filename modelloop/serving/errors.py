"""The scoring tier's own errors, derived from `modelloop.contract.errors` so callers map them in one place.

    ModelloopError
    ├── InvalidInputError
    │   └── OversizedInputError     a request exceeds a size limit (rows, bytes) -> RESOURCE_EXHAUSTED
    ├── UnavailableError
    │   └── NotReadyError           the model is loading, draining or the server is stopping -> UNAVAILABLE
    └── ModelLoadError              a version exists but cannot be loaded or warmed up -> FAILED_PRECONDITION

`serving.status` maps every one of them to a gRPC status code; `serving.client` maps codes back.

Caller strings (model names, versions, input and column names, aliases, request ids: anything that came in a
request) go into a message only through `clip` (one string) or `clip_names` (a list), so a message never grows
with what a caller sent: a 10 kB model name comes back as its first 64 characters and `…`. `serving.status`
caps the whole message too, below gRPC's metadata budget.
"""

from __future__ import annotations

from collections.abc import Iterable

from modelloop.contract.errors import InvalidInputError, ModelloopError, UnavailableError

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


class OversizedInputError(InvalidInputError):
    """A request is larger than the configured limit; the message names the limit, not the data."""


class NotReadyError(UnavailableError):
    """The model (or the whole server) cannot answer now; retrying later may succeed."""


class ModelLoadError(ModelloopError):
    """A registered version could not be loaded or warmed up; whatever served before keeps serving."""


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
