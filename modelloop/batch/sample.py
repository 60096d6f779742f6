"""A bounded uniform sample of a batch's inputs, and its drift against the version's reference profile.

Used by `batch.scoring`: every accepted chunk is offered to `InputSample.add`, which keeps the `capacity` rows
with the smallest random keys seen so far (a uniform sample without replacement, whatever the input's size,
in memory bounded by `capacity` rows); `drift` then measures it with monitoring's statistics
(`monitoring.drift.feature_drift`, `summarise`), as a monitoring window is measured.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from modelloop.contract.profile import ReferenceProfile
from modelloop.monitoring.config import DriftRules
from modelloop.monitoring.drift import DriftSummary, FeatureDrift, feature_drift, summarise

DEFAULT_CAPACITY = 100_000


class InputSample:
    """The sample (see the module docstring); `seed` makes it reproducible."""

    def __init__(self, columns: list[str], *, capacity: int = DEFAULT_CAPACITY, seed: int = 0) -> None:
        self.columns = columns
        self.capacity = capacity
        self._rng = np.random.default_rng(seed)
        self._table: pa.Table | None = None
        self._keys = np.empty(0)
        self.seen = 0

    def add(self, batch: pa.RecordBatch) -> None:
        n = batch.num_rows
        if not n:
            return
        self.seen += n
        keys = self._rng.random(n)
        full = self._keys.size >= self.capacity
        if full:
            pick = np.flatnonzero(keys < self._keys.max())
            if not pick.size:
                return
            keys = keys[pick]
            batch = batch.take(pa.array(pick))
        names = [c for c in self.columns if c in batch.schema.names]
        part = pa.Table.from_batches([batch.select(names)])
        table = (
            part if self._table is None else pa.concat_tables([self._table, part], promote_options="default")
        )
        all_keys = np.concatenate([self._keys, keys])
        if all_keys.size > self.capacity:
            keep = np.sort(np.argpartition(all_keys, self.capacity - 1)[: self.capacity])
            table, all_keys = table.take(pa.array(keep)), all_keys[keep]
        self._table, self._keys = table.combine_chunks(), all_keys

    @property
    def rows(self) -> int:
        return 0 if self._table is None else self._table.num_rows

    def drift(
        self, profile: ReferenceProfile, rules: DriftRules | None = None
    ) -> tuple[dict[str, FeatureDrift], DriftSummary]:
        """Each profiled feature's drift on the sample, and the dataset's verdict."""
        rules = rules or DriftRules()
        total = self.rows
        features: dict[str, FeatureDrift] = {}
        for name, feature_profile in profile.features.items():
            column = None
            if self._table is not None and name in self._table.schema.names:
                column = self._table.column(name)
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
