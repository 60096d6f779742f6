"""The one classification of MLflow's exceptions into the registry port's three errors.

Called by the adapters for every MLflow call (`mlflow_registry`, `mlflow_runs`, `mlflow_rollouts`,
`mlflow_webhooks`), and by the modules that still talk to MLflow directly (training's records and
registration, monitoring's records) wherever they need to tell "not found" from "unreachable" from "refused":

    what MLflow raised                                                  kind          port error
    ------------------------------------------------------------------  ------------  ---------------------
    error code RESOURCE_DOES_NOT_EXIST or NOT_FOUND                     not found     NotFoundError
    error code INVALID_PARAMETER_VALUE, in a lookup by name             not found     NotFoundError
      (MLflow answers it for a missing alias, a reserved alias such as
      `latest`, a version that is not a number: nothing by that name)
    any other 4xx status (permission denied, invalid request, exists)   refused       RegistryRefusedError
    a 5xx status, an MlflowException without a 4xx status (connection   unavailable   UnavailableError
      refused, retries exhausted, timeouts), any OSError (requests'
      errors are OSErrors)

Anything else (a bug, a model that cannot be unpickled) is not a registry error: `kind_of` returns None and
the caller lets it through. Messages name the operation, the registry (`public_uri`: no user or password) and
the error code or exception type; never the server's response body, which may echo the request.
"""

from __future__ import annotations

from enum import StrEnum

from modelloop.contract.errors import ModelloopError, NotFoundError, UnavailableError
from modelloop.contract.model_registry import RegistryRefusedError

#: MLflow error codes meaning "no such thing", whatever the call
NOT_FOUND_CODES = frozenset({"RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"})
#: ... and, in a lookup by name (model, version, alias, run id), the code MLflow gives names that cannot exist
LOOKUP_NOT_FOUND_CODES = NOT_FOUND_CODES | {"INVALID_PARAMETER_VALUE"}


class Kind(StrEnum):
    """What an MLflow failure means for the caller."""

    NOT_FOUND = "not found"
    UNAVAILABLE = "unavailable"
    REFUSED = "refused"


def error_code(exc: BaseException) -> str:
    """MLflow's error code of `exc` ("" for an exception that carries none)."""
    return str(getattr(exc, "error_code", "") or "")


def kind_of(exc: BaseException, *, lookup: bool = False) -> Kind | None:
    """The kind of an MLflow or transport failure (see the module docstring), None for any other exception.

    `lookup=True` for a read of something by name, where INVALID_PARAMETER_VALUE means "no such thing"."""
    from mlflow.exceptions import MlflowException

    if isinstance(exc, MlflowException):
        if error_code(exc) in (LOOKUP_NOT_FOUND_CODES if lookup else NOT_FOUND_CODES):
            return Kind.NOT_FOUND
        status = int(exc.get_http_status_code())  # type: ignore[no-untyped-call]
        return Kind.REFUSED if 400 <= status < 500 else Kind.UNAVAILABLE
    if isinstance(exc, OSError):
        return Kind.UNAVAILABLE
    return None


def is_not_found(exc: BaseException, *, lookup: bool = False) -> bool:
    """True when MLflow said "no such thing"."""
    return kind_of(exc, lookup=lookup) is Kind.NOT_FOUND


def classify(
    exc: BaseException, doing: str, *, where: str = "MLflow", lookup: bool = False
) -> ModelloopError:
    """The port error for `exc`, raised while `doing` (e.g. "resolving churn@production") against `where`
    (e.g. "MLflow at http://mlflow:5000"). An exception of no known kind counts as unavailable: call it only
    for MLflow and transport failures (`kind_of(exc) is not None`)."""
    kind = kind_of(exc, lookup=lookup)
    detail = error_code(exc) or type(exc).__name__
    if kind is Kind.NOT_FOUND:
        return NotFoundError(f"{where} found nothing while {doing} ({detail})")
    if kind is Kind.REFUSED:
        return RegistryRefusedError(f"{where} refused {doing} ({detail})")
    return UnavailableError(f"{where} unreachable while {doing} ({detail})")


__all__ = [
    "LOOKUP_NOT_FOUND_CODES",
    "NOT_FOUND_CODES",
    "Kind",
    "classify",
    "error_code",
    "is_not_found",
    "kind_of",
]
