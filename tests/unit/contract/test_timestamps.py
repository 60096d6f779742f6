"""Tag timestamps: ISO-8601 UTC to the second when written; ISO-8601 or unix seconds when read."""

from __future__ import annotations

import pytest

from modelloop.contract.timestamps import iso_utc, unix_seconds


def test_written_as_iso_utc_to_the_second_and_read_back() -> None:
    assert iso_utc(1_796_000_000.75) == "2026-11-30T00:53:20Z"
    assert unix_seconds(iso_utc(1_796_000_000)) == 1_796_000_000


def test_reads_unix_seconds_of_older_tags_and_naive_times_as_utc() -> None:
    assert unix_seconds("1796000000.5") == 1_796_000_000.5
    assert unix_seconds("2026-11-30T00:53:20") == 1_796_000_000
    assert unix_seconds("2026-11-30T01:53:20+01:00") == 1_796_000_000


@pytest.mark.parametrize("text", ["", "yesterday", "2026-13-01T00:00:00Z"])
def test_anything_else_is_a_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        unix_seconds(text)
