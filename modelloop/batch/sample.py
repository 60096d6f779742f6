"""A bounded uniform sample of a batch's inputs, and its drift against the version's reference profile.

Used by `batch.scoring`: the accepted rows of every chunk are offered to `InputSample.add`, which keeps the
`capacity` rows with the smallest random keys seen so far (a uniform sample without replacement, whatever the
input's size). Only rows whose key is below the current cut-off are copied out of a chunk (once the sample is
full, few are), and the kept rows are trimmed back to `capacity` when they pass 1.5 x `capacity`, so memory
stays bounded by 1.5 x `capacity` rows and a chunk costs a copy of its few candidates, not of the sample.
`drift` then measures the sample with monitoring's statistics (`monitoring.drift.feature_drift`,
`summarise`), as a monitoring window is measured; those (and SciPy under them) are imported only then.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

if TYPE_CHECKING:
    from modelloop.contract.profile import ReferenceProfile
    from modelloop.monitoring.config import DriftRules
    from modelloop.monitoring.drift import DriftSummary, FeatureDrift

DEFAULT_CAPACITY = 100_000


class InputSample:
    """The sample (see the module docstring); `seed` makes it reproducible."""

    def __init__(self, columns: list[str], *, capacity: int = DEFAULT_CAPACITY, seed: int = 0) -> None:
        self.columns = columns
        self.capacity = capacity
        self._rng = np.random.default_rng(seed)
        self._parts: list[pa.Table] = []
        self._keys: list[np.ndarray[Any, Any]] = []
        self._held = 0
        self._cut = np.inf  # keys at or above it can no longer be among the `capacity` smallest
        self.seen = 0

    def add(self, batch: pa.RecordBatch, rows: np.ndarray[Any, Any] | None = None) -> None:
        """Offer the rows of `batch` at positions `rows` (default: all of them)."""
        n = batch.num_rows if rows is None else int(rows.size)
        if not n:
            return
        self.seen += n
        keys = self._rng.random(n)
        pick = np.flatnonzero(keys < self._cut) if np.isfinite(self._cut) else None
        if pick is not None:
            if not pick.size:
                return
            keys = keys[pick]
        positions = pick if rows is None else (rows if pick is None else rows[pick])
        names = [c for c in self.columns if c in batch.schema.names]
        part = batch.select(names)
        if positions is not None and positions.size != batch.num_rows:
            part = part.take(pa.array(positions, type=pa.int64()))
        self._parts.append(pa.Table.from_batches([part]))
        self._keys.append(keys)
        self._held += int(keys.size)
        if self._held > self.capacity + self.capacity // 2:
            self._trim()

    def _trim(self) -> None:
        """Keep the `capacity` rows with the smallest keys (in the order they came), as one table."""
        if not self._parts:
            return
        table = pa.concat_tables(self._parts, promote_options="default")
        keys = np.concatenate(self._keys)
        if keys.size > self.capacity:
            keep = np.sort(np.argpartition(keys, self.capacity - 1)[: self.capacity])
            table, keys = table.take(pa.array(keep, type=pa.int64())), keys[keep]
            self._cut = float(keys.max())
        self._parts, self._keys, self._held = [table.combine_chunks()], [keys], int(keys.size)

    def table(self) -> pa.Table | None:
        """The sampled rows (None before any)."""
        self._trim()
        return self._parts[0] if self._parts else None

    @property
    def rows(self) -> int:
        return min(self._held, self.capacity)

    def drift(
        self, profile: ReferenceProfile, rules: DriftRules | None = None
    ) -> tuple[dict[str, FeatureDrift], DriftSummary]:
        """Each profiled feature's drift on the sample, and the dataset's verdict."""
        from modelloop.monitoring.config import DriftRules
        from modelloop.monitoring.drift import feature_drift, summarise

        rules = rules or DriftRules()
        table = self.table()
        total = self.rows
        features: dict[str, FeatureDrift] = {}
        for name, feature_profile in profile.features.items():
            column = None
            if table is not None and name in table.schema.names:
                column = table.column(name)
            features[name] = feature_drift(name, feature_profile, column, rules, total=total)
        return features, summarise(features, rules)


def drift_metrics(features: Mapping[str, FeatureDrift], summary: DriftSummary) -> dict[str, float]:
    """The MLflow metrics of a batch's drift: the summary, and each feature's decision and main distance."""
    metrics = {
        "drift.evaluated_features": float(summary.evaluated),
        "drift.drifted_features": float(summary.drifted),
        "drift.share_drifted": summary.share_drifted,
        "drift.dataset_drifted": float(summary.dataset_drifted),
    }
    for name, f in features.items():
        if f.status != "ok":
            continue
        metrics[f"drift.{name}.drifted"] = float(f.drifted)
        for stat in ("psi", "wasserstein", "js"):
            if stat in f.stats:
                metrics[f"drift.{name}.{stat}"] = f.stats[stat]
    return metrics


@dataclass(frozen=True)
class DriftReport:
    """What the batch's record carries about drift."""

    sample_rows: int
    features: dict[str, FeatureDrift]
    summary: DriftSummary


__all__ = ["DEFAULT_CAPACITY", "DriftReport", "InputSample", "drift_metrics"]
