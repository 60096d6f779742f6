"""A registered version's single-row latency as the scoring server answers it, for distillation's record.

`modelloop train` gives `served_latency_ms(tracking_uri)` to the training (`training.distill.ServedLatency`;
training itself may not import serving). It loads the version with the scoring server's loader
(`serving.model_host.load_model`: the registry, the signature, the unseen-category policy, the fast path),
turns the row into the validated features the server would predict (batch scoring's Arrow validation, the
same checks and conversions), and times the prediction alone: the median of `runs` single-row calls, in
milliseconds. What surrounds it in a request (the gRPC round trip, decoding, batching) is the same for any
model and is not counted, as in bench/distill.py.
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from modelloop.contract.errors import InvalidInputError

RUNS = 300


def served_latency_ms(tracking_uri: str, *, runs: int = RUNS) -> Callable[[str, str, pd.DataFrame], float]:
    """A measure of one registered version's single-row latency as served (see the module docstring)."""

    def measure(name: str, version: str, row: pd.DataFrame) -> float:
        import pyarrow as pa

        from modelloop.batch.rows import check_chunk
        from modelloop.serving.model_host import load_model
        from modelloop.training.distill import median_ms

        loaded = load_model(tracking_uri, name, version, max_rows=16)
        checked = check_chunk(loaded.schema, pa.RecordBatch.from_pandas(row.head(1), preserve_index=False))
        features = checked.features
        if features is None:
            raise InvalidInputError(f"model {name}/{version} refuses the row: {checked.reasons[0]}")
        return median_ms(lambda: loaded.predict(features), runs=runs)

    return measure


__all__ = ["RUNS", "served_latency_ms"]
