"""Batch scoring: a whole table scored with exactly the version the scoring server would load.

Sits on the deploy floor, deploy's independent sibling: it uses serving's loader and validation
(`serving.model_host.load_model`, `serving.schema.ModelSchema`) and monitoring's drift statistics, and
records each batch in MLflow through `adapters.mlflow_batch_runs`. Called by `modelloop score`
(`cli/score.py`), locally or as one index of the chart's Indexed Job.

    sources.py   Parquet / CSV / SQL query, read in bounded chunks, one shard's share of it
    shards.py    which share of the input one shard (`index::N`) scores
    rows.py      a chunk into validated rows and rejects (serving's validation and messages)
    sinks.py     Parquet parts or a SQL table, nothing visible until the shard commits
    sample.py    a bounded uniform sample of the inputs, for the drift summary
    progress.py  the progress line on stderr
    scoring.py   the loop: read, validate, predict, write; the result and its MLflow record
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .scoring import BatchJob, BatchResult, score_batch
    from .shards import Shard


def __getattr__(name: str) -> Any:
    """The package's names, imported when first used: a process that only needs `progress` or `shards`
    (the launcher of local shards) does not import the scoring loop's libraries (pyarrow, MLflow)."""
    if name in {"BatchJob", "BatchResult", "score_batch"}:
        from . import scoring

        return getattr(scoring, name)
    if name == "Shard":
        from .shards import Shard

        return Shard
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["BatchJob", "BatchResult", "Shard", "score_batch"]
