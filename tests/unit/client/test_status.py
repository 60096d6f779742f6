"""Status codes back to modelloop errors, as the client raises them (`contract.wire.status.error_for`)."""

from __future__ import annotations

import grpc
import pytest

from modelloop.client import (
    ConfigError,
    InvalidInputError,
    ModelLoadError,
    ModelloopError,
    NotFoundError,
    OversizedInputError,
    UnavailableError,
)
from modelloop.contract.wire.status import MAX_DETAILS_BYTES, error_for


@pytest.mark.parametrize(
    ("code", "error"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, InvalidInputError),
        (grpc.StatusCode.OUT_OF_RANGE, InvalidInputError),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, OversizedInputError),
        (grpc.StatusCode.NOT_FOUND, NotFoundError),
        (grpc.StatusCode.UNAVAILABLE, UnavailableError),
        (grpc.StatusCode.DEADLINE_EXCEEDED, UnavailableError),
        (grpc.StatusCode.CANCELLED, UnavailableError),
        (grpc.StatusCode.FAILED_PRECONDITION, ModelLoadError),
        (grpc.StatusCode.UNAUTHENTICATED, ConfigError),
        (grpc.StatusCode.PERMISSION_DENIED, ConfigError),
        (grpc.StatusCode.INTERNAL, ModelloopError),
    ],
)
def test_each_code_becomes_its_error(code: grpc.StatusCode, error: type[ModelloopError]) -> None:
    raised = error_for(code, "details")
    assert type(raised) is error
    assert "details" in str(raised)


def test_the_concurrency_limit_is_overload_not_oversize() -> None:
    raised = error_for(grpc.StatusCode.RESOURCE_EXHAUSTED, "Concurrent RPC limit exceeded!")
    assert type(raised) is UnavailableError
    assert "retry later" in str(raised)


def test_details_are_bounded_and_never_empty() -> None:
    assert len(str(error_for(grpc.StatusCode.NOT_FOUND, "é" * 5000)).encode()) <= MAX_DETAILS_BYTES
    assert str(error_for(grpc.StatusCode.UNAVAILABLE, None)) == "UNAVAILABLE"
    assert str(error_for(grpc.StatusCode.UNAUTHENTICATED, "no")).startswith("not authenticated")
