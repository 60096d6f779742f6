"""What a batch's MLflow run carries, written through `adapters.mlflow_batch_runs`.

`MlflowRecorder` is the `Recorder` `modelloop score` gives `batch.scoring.BatchJob`: after a shard has
committed its output it writes a run in the `modelloop-batch` experiment with the model version (params and
tags), the input as a logged dataset with its digest, the row counts (scored, rejected), the duration and
rows/s, the output location, the reject reasons, and the drift summary of the inputs against the version's
reference profile (metrics `drift.*` and the document `drift.json`), so a batch on drifted data shows in
MLflow as a drifted monitoring window does. A shard of a sharded batch writes a child of the batch's parent
run (`parent_run_id`, else the parent found or created by batch id).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from modelloop.adapters.mlflow_batch_runs import BATCH_EXPERIMENT, BatchDataset, BatchRun, MlflowBatchRuns
from modelloop.adapters.mlflow_registry import MlflowModelRegistry
from modelloop.serving.model_host import LoadedModel

from .sample import drift_metrics
from .scoring import BatchResult

TAG_MODEL = "modelloop.model"
TAG_MODEL_VERSION = "modelloop.model_version"


def run_name(result: BatchResult) -> str:
    shard = "" if result.shard.whole else f"-shard-{result.shard.index}"
    return f"batch-{result.model}-v{result.version}-{result.batch_id}{shard}"


def batch_run(result: BatchResult, model: LoadedModel, *, parent_run_id: str | None = None) -> BatchRun:
    """The run of one batch (or shard) from its result."""
    metrics: dict[str, float] = {
        "rows.scored": float(result.scored),
        "rows.rejected": float(result.rejected),
        "rows.total": float(result.rows),
        "duration_s": result.seconds,
        "rows_per_second": result.rows_per_second,
    }
    documents: dict[str, dict[str, Any]] = {"rejects.json": {"reasons": result.reject_reasons}}
    if result.drift is not None:
        metrics["drift.sample_rows"] = float(result.drift.sample_rows)
        metrics.update(drift_metrics(result.drift.features, result.drift.summary))
        documents["drift.json"] = {
            "sample_rows": result.drift.sample_rows,
            "summary": asdict(result.drift.summary),
            "features": {k: asdict(v) for k, v in result.drift.features.items()},
        }
    params = {
        "model": result.model,
        "model_version": result.version,
        "batch_id": result.batch_id,
        "shard": str(result.shard),
        "input": result.input_location,
        "input_kind": result.input_kind,
        "input_digest": result.input_digest,
        "output": result.output,
    }
    dataset = BatchDataset(
        name=result.input_location.rsplit("/", 1)[-1] if result.input_kind != "sql" else "query",
        digest=result.input_digest,
        source_type="local" if result.input_kind != "sql" else "sql",
        source=result.input_location,
        schema={c.name: c.dtype for c in model.schema.columns},
        rows=result.rows,
    )
    return BatchRun(
        batch_id=result.batch_id,
        shard=str(result.shard.index),
        shards=result.shard.count,
        name=run_name(result),
        params=params,
        tags={TAG_MODEL: result.model, TAG_MODEL_VERSION: result.version},
        metrics=metrics,
        dataset=dataset,
        documents=documents,
        parent_run_id=parent_run_id,
    )


class MlflowRecorder:
    """Writes each result as a run on the tracking server at `tracking_uri` (see the module docstring)."""

    def __init__(
        self, tracking_uri: str, *, parent_run_id: str | None = None, experiment: str = BATCH_EXPERIMENT
    ) -> None:
        self._runs = MlflowBatchRuns(MlflowModelRegistry(tracking_uri), experiment=experiment)
        self._parent_run_id = parent_run_id

    def parent(self, batch_id: str, shards: int, *, model: str) -> str:
        """The parent run of a sharded batch (found by batch id, else created)."""
        return self._runs.parent(batch_id, shards, name=f"batch-{model}-{batch_id}", tags={TAG_MODEL: model})

    def parent_ended(self, run_id: str, status: str) -> None:
        """End the parent run `run_id` with `status` (FAILED, KILLED): its shards did not all finish."""
        self._runs.end_parent(run_id, status)

    def __call__(self, result: BatchResult, model: LoadedModel) -> str:
        parent = self._parent_run_id
        if parent is None and not result.shard.whole:
            parent = self.parent(result.batch_id, result.shard.count, model=result.model)
        return self._runs.write(batch_run(result, model, parent_run_id=parent))


__all__ = ["MlflowRecorder", "batch_run", "run_name"]
