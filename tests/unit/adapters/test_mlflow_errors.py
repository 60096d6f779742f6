"""The one classification of MLflow's exceptions: not found, unavailable, refused; nothing else touched."""

from __future__ import annotations

import pytest
import requests
from mlflow.exceptions import MlflowException, RestException

from modelloop.adapters.mlflow_errors import Kind, classify, is_not_found, kind_of
from modelloop.contract.errors import NotFoundError, UnavailableError
from modelloop.contract.model_registry import RegistryRefusedError


def rest(code: str, message: str = "the server's own words") -> RestException:
    return RestException({"error_code": code, "message": message})


@pytest.mark.parametrize(
    ("exc", "lookup", "kind"),
    [
        (rest("RESOURCE_DOES_NOT_EXIST"), False, Kind.NOT_FOUND),
        (rest("NOT_FOUND"), False, Kind.NOT_FOUND),
        (rest("INVALID_PARAMETER_VALUE"), True, Kind.NOT_FOUND),
        (rest("INVALID_PARAMETER_VALUE"), False, Kind.REFUSED),
        (rest("PERMISSION_DENIED"), True, Kind.REFUSED),
        (rest("RESOURCE_ALREADY_EXISTS"), False, Kind.REFUSED),
        (rest("INTERNAL_ERROR"), True, Kind.UNAVAILABLE),
        (rest("TEMPORARILY_UNAVAILABLE"), False, Kind.UNAVAILABLE),
        (MlflowException("API request to http://x failed: Max retries exceeded"), True, Kind.UNAVAILABLE),
        (requests.ConnectionError("refused"), False, Kind.UNAVAILABLE),
        (OSError("disk"), False, Kind.UNAVAILABLE),
        (ValueError("a bug"), True, None),
    ],
    ids=lambda v: getattr(v, "error_code", None) or type(v).__name__ if isinstance(v, Exception) else str(v),
)
def test_kinds(exc: Exception, lookup: bool, kind: Kind | None) -> None:
    assert kind_of(exc, lookup=lookup) is kind
    assert is_not_found(exc, lookup=lookup) is (kind is Kind.NOT_FOUND)


@pytest.mark.parametrize(
    ("exc", "error"),
    [
        (rest("RESOURCE_DOES_NOT_EXIST"), NotFoundError),
        (rest("PERMISSION_DENIED"), RegistryRefusedError),
        (rest("INTERNAL_ERROR"), UnavailableError),
    ],
)
def test_messages_name_the_operation_and_never_the_response(exc: Exception, error: type[Exception]) -> None:
    found = classify(exc, "resolving churn@production", where="MLflow at http://mlflow:5000")
    assert isinstance(found, error)
    text = str(found)
    assert "resolving churn@production" in text and "MLflow at http://mlflow:5000" in text
    assert str(getattr(exc, "error_code", "")) in text
    assert "own words" not in text
