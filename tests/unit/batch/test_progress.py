"""The progress line reads back: `parse_line` gives the rows and total `Progress.line` wrote, which is how
`modelloop score --shards N` sums its local shards' lines."""

from __future__ import annotations

import io

from modelloop.batch.progress import Progress, parse_line


def test_a_line_reads_back_with_and_without_a_total() -> None:
    known = Progress(1_234_567, stream=io.StringIO())
    known.advance(345_678)
    assert parse_line(known.line()) == (345_678, 1_234_567)
    unknown = Progress(None, stream=io.StringIO())
    unknown.advance(12)
    assert parse_line("\r" + unknown.line() + "\n") == (12, None)


def test_other_lines_are_not_progress() -> None:
    assert parse_line("batch b shard 0::2: model m version 1: 10 rows scored") is None
    assert parse_line("error: scored nothing") is None


def test_an_empty_shard_says_its_total_is_zero() -> None:
    """A shard with no rows (more shards than rows) still tells the batch its total, so the batch's line
    knows the sum of every shard's."""
    empty = Progress(0, stream=io.StringIO())
    assert "of 0 (100%)" in empty.line()
    assert parse_line(empty.line()) == (0, 0)
