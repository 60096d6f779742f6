"""MLflow's filter strings: a value quoted with the quote it does not hold, a LIKE superset when it holds
both."""

from __future__ import annotations

import pytest

from modelloop.adapters.mlflow_filters import equals, param, tag


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("name", "churn", "name = 'churn'"),
        (tag("modelloop.rollout.record_id"), "abc", "tags.`modelloop.rollout.record_id` = 'abc'"),
        (param("binding"), "it's", 'params.`binding` = "it\'s"'),
        (tag("k"), "a'b\"c", "tags.`k` LIKE 'a_b_c'"),
    ],
)
def test_equals(field: str, value: str, expected: str) -> None:
    assert equals(field, value) == expected
