"""The error a scoring call can end in beyond the contract's own (`modelloop.contract.errors`).

    ModelloopError
    └── InvalidInputError
        └── OversizedInputError     a request exceeds a size limit (rows, bytes)     RESOURCE_EXHAUSTED

It is part of the wire because a status code carries it from the scoring server to its callers: the server
raises it (`modelloop.serving.errors`) and the client raises it again from the code
(`contract.wire.status.error_for`). Every other error either side raises is the contract's.
"""

from __future__ import annotations

from modelloop.contract.errors import InvalidInputError


class OversizedInputError(InvalidInputError):
    """A request is larger than the configured limit; the message names the limit, not the data."""


__all__ = ["OversizedInputError"]
