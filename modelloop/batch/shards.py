"""Which share of the input one shard scores: `Shard(index, count)`, parsed from `index::N`.

Used by `batch.sources`:
- a Parquet file is cut into N contiguous row ranges of equal size (`row_range`, from its footer's row
  count), each shard decoding only the row groups its range touches, so a file of a single row group splits
  as well as one of many;
- a CSV file by its read blocks (block b goes to shard b mod N);
- a query by contiguous ranges of an integer key column (`key_bounds`: the key's [min, max] cut into N
  ranges of equal width; the first range is open below and holds the NULL keys, the last is open above), so
  each shard's SQL is a range condition an index on the key serves.
Every row belongs to exactly one shard whatever N is, so N shards together score the input once.
"""

from __future__ import annotations

from dataclasses import dataclass

from modelloop.contract.errors import InvalidInputError


@dataclass(frozen=True)
class Shard:
    """Shard `index` of `count` (0 <= index < count)."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise InvalidInputError(f"shard {self.index}::{self.count} is not one of {self.count} shards")

    @classmethod
    def parse(cls, text: str) -> Shard:
        """`INDEX::COUNT` (e.g. `0::4`)."""
        index, sep, count = text.partition("::")
        if not sep or not index.strip().isdigit() or not count.strip().isdigit():
            raise InvalidInputError(f"shard {text[:40]!r} is not INDEX::COUNT (e.g. 0::4)")
        return cls(int(index), int(count))

    @property
    def whole(self) -> bool:
        return self.count == 1

    def owns(self, position: int) -> bool:
        """True when the block (a CSV read block) at `position` is this shard's."""
        return position % self.count == self.index

    def row_range(self, total: int) -> tuple[int, int]:
        """This shard's rows `[start, stop)` of `total` rows: N contiguous ranges whose sizes differ by at
        most one row (empty ones when there are fewer rows than shards)."""
        return self.index * total // self.count, (self.index + 1) * total // self.count

    def key_bounds(self, low: int, high: int) -> tuple[int | None, int | None]:
        """This shard's key range `[lower, upper)` over keys from `low` to `high` (None: open on that side).
        The N ranges cut [low, high] into equal widths (empty ones when there are fewer keys than shards);
        the first is open below and the last open above, so together they hold every integer."""
        span = max(high - low + 1, 1)

        def cut(j: int) -> int:
            return low + (j * span) // self.count

        lower = None if self.index == 0 else cut(self.index)
        upper = None if self.index == self.count - 1 else cut(self.index + 1)
        return lower, upper

    def __str__(self) -> str:
        return f"{self.index}::{self.count}"


#: the whole input: one shard of one
WHOLE = Shard()

__all__ = ["WHOLE", "Shard"]
