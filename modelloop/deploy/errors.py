"""The controller's two answers to a failed step, as kopf gives them: "retry later" or "give up".

    ModelloopError
    ├── UnavailableError
    │   └── TemporaryError     retry this binding after `delay` seconds (MLflow or the cluster unreachable)
    └── PermanentError         retrying will not help (bad binding, model missing)
        └── RolloutFailedError      the new version did not become ready; the previous one keeps serving

Raised by the registry port and the targets; caught by `deploy.reconcile` and `deploy.controller`.
"""

from __future__ import annotations

from modelloop.contract.errors import ModelloopError, UnavailableError


class TemporaryError(UnavailableError):
    """Retry later: the step may succeed after `delay` seconds."""

    def __init__(self, message: str, *, delay: float = 5.0) -> None:
        super().__init__(message, retry_after=delay)
        self.delay = delay


class PermanentError(ModelloopError):
    """Give up on this attempt: retrying the same thing will fail the same way."""


class RolloutFailedError(PermanentError):
    """A version could not become ready by its deadline; the target still serves the previous one."""


__all__ = ["PermanentError", "RolloutFailedError", "TemporaryError"]
