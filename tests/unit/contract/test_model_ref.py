"""The one parser of `NAME@ALIAS` / `NAME/VERSION`, shared by `modelloop serve` and `modelloop score`."""

from __future__ import annotations

import pytest

from modelloop.contract.errors import ConfigError
from modelloop.contract.model_ref import parse_model_ref


def test_aliases_and_versions_are_split_where_mlflow_splits_them() -> None:
    assert parse_model_ref("churn@production") == ("churn", "production")
    assert parse_model_ref("churn/3") == ("churn", "3")
    assert parse_model_ref("team/churn/3") == ("team/churn", "3")
    assert parse_model_ref("team/churn@champion") == ("team/churn", "champion")


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("churn", "expected NAME@ALIAS or NAME/VERSION"),
        ("@production", "expected NAME@ALIAS or NAME/VERSION"),
        ("churn@", "expected NAME@ALIAS or NAME/VERSION"),
        ("churn/", "expected NAME@ALIAS or NAME/VERSION"),
        ("churn/latest", "the version after '/' must be a number"),
    ],
)
def test_a_bad_reference_is_one_line_naming_it(text: str, says: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_model_ref(text)
    assert says in str(raised.value) and repr(text) in str(raised.value) and "\n" not in str(raised.value)


def test_serving_and_batch_use_this_parser() -> None:
    from modelloop.batch import scoring
    from modelloop.serving import app

    assert app.parse_model_ref is parse_model_ref and scoring.parse_model_ref is parse_model_ref
