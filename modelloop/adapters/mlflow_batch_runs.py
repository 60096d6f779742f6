"""Writing a batch-scoring run to MLflow: one run per batch, or a parent run with a child run per shard.

Called by `modelloop.batch.records.MlflowRecorder`, which decides what a run carries (params, metrics, tags,
the input dataset, JSON documents); this module only writes it, in the `modelloop-batch` experiment (created
on first use). Writing is idempotent: a run is tagged with its batch id and shard when created
(`TAG_BATCH_ID`, `TAG_BATCH_SHARD`), and writing the same batch and shard again (a re-run, a Job's retry of a
failed shard) finds that run and continues it rather than starting another.

A sharded batch has one parent run (`parent`: found by batch id, or created; `modelloop score --on-kubernetes`
creates it before launching the Job and passes its id to every shard) and a child per shard
(`mlflow.parentRunId`). Each child, once written, checks whether every shard has finished; the one that sees
them all sums their counts onto the parent and ends it (two seeing it at once write the same sums).

Failures become the registry port's errors through `adapters.mlflow_errors`, with the message "... while
writing a batch record".
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from modelloop.contract.errors import InvalidInputError
from modelloop.contract.registry import TAG_RUN_KIND

from . import mlflow_errors, mlflow_filters
from .mlflow_experiments import ensure_experiment
from .mlflow_registry import MlflowModelRegistry

if TYPE_CHECKING:
    pass

BATCH_EXPERIMENT = "modelloop-batch"
TAG_BATCH_ID = "modelloop.batch.id"
TAG_BATCH_SHARD = "modelloop.batch.shard"  # "<index>" on a shard's run, "parent" on a parent run
TAG_BATCH_SHARDS = "modelloop.batch.shards"  # how many shards the batch has
TAG_PARENT_RUN = "mlflow.parentRunId"
PARENT = "parent"
#: metrics a parent run sums over its children
SUMMED = ("rows.scored", "rows.rejected", "rows.total")
DOING = "writing a batch record"


@dataclass(frozen=True)
class BatchDataset:
    """The input as an MLflow dataset (`log_inputs`)."""

    name: str
    digest: str
    source_type: str  # "local" | "sql"
    source: str  # where it is (no credentials)
    schema: Mapping[str, str] = field(default_factory=dict)  # column -> type
    rows: int | None = None


@dataclass(frozen=True)
class BatchRun:
    """What one batch (or one shard's) run carries."""

    batch_id: str
    shard: str  # the shard index, or "parent"
    shards: int
    name: str
    params: Mapping[str, str]
    tags: Mapping[str, str]
    metrics: Mapping[str, float] = field(default_factory=dict)
    dataset: BatchDataset | None = None
    documents: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # artifact file -> JSON
    parent_run_id: str | None = None
    failed: bool = False


class MlflowBatchRuns:
    """Batch runs on the registry's tracking server (see the module docstring)."""

    def __init__(self, registry: MlflowModelRegistry, *, experiment: str = BATCH_EXPERIMENT) -> None:
        self._client = registry.client
        self._where = registry.where
        self._experiment = experiment

    def parent(self, batch_id: str, shards: int, *, name: str, tags: Mapping[str, str]) -> str:
        """The parent run of a sharded batch: the one tagged with `batch_id`, else a new one (RUNNING)."""
        return self._guarded(lambda: self._parent(batch_id, shards, name, tags))

    def write(self, run: BatchRun) -> str:
        """Write `run` (see the module docstring); returns its MLflow run id."""
        return self._guarded(lambda: self._write(run))

    def end_parent(self, run_id: str, status: str) -> None:
        """End a parent run whose shards will not all finish now (`FAILED`, `KILLED`); a re-run of the batch
        reopens nothing but finishes it again once every shard's run has finished."""

        def end() -> str:
            self._client.set_terminated(run_id, status=status)
            return run_id

        self._guarded(end)

    def _guarded(self, action: Callable[[], str]) -> str:
        try:
            return action()
        except Exception as exc:
            if mlflow_errors.kind_of(exc) is None:
                raise
            raise mlflow_errors.classify(exc, DOING, where=self._where) from None

    def _parent(self, batch_id: str, shards: int, name: str, tags: Mapping[str, str]) -> str:
        exp_id = self._experiment_id()
        found = self._find(exp_id, batch_id, PARENT)
        if found is not None:
            return found
        all_tags = {**tags, TAG_RUN_KIND: "batch", TAG_BATCH_ID: batch_id, TAG_BATCH_SHARD: PARENT}
        all_tags[TAG_BATCH_SHARDS] = str(shards)
        return str(self._client.create_run(exp_id, run_name=name, tags=all_tags).info.run_id)

    def _write(self, run: BatchRun) -> str:
        from mlflow.entities import Dataset, DatasetInput, Metric, Param, RunTag

        client = self._client
        exp_id = self._experiment_id()
        run_id = self._find(exp_id, run.batch_id, run.shard)
        tags = {
            **run.tags,
            TAG_RUN_KIND: "batch",
            TAG_BATCH_ID: run.batch_id,
            TAG_BATCH_SHARD: run.shard,
            TAG_BATCH_SHARDS: str(run.shards),
        }
        if run.parent_run_id:
            tags[TAG_PARENT_RUN] = run.parent_run_id
        params = {k: v[:6000] for k, v in run.params.items()}
        if run_id is None:
            run_id = str(client.create_run(exp_id, run_name=run.name, tags=tags).info.run_id)
        else:
            params = self._new_params(run_id, run.batch_id, params)
        client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), _now_ms(), 0) for k, v in run.metrics.items()],
            params=[Param(k, v) for k, v in params.items()],
            tags=[RunTag(k, v) for k, v in tags.items()],
        )
        if run.dataset is not None:
            d = run.dataset
            schema = {"mlflow_colspec": [{"name": k, "type": v} for k, v in d.schema.items()]}
            profile = {"num_rows": d.rows} if d.rows is not None else {}
            dataset = Dataset(
                d.name, d.digest, d.source_type, json.dumps({"uri": d.source}), json.dumps(schema),
                json.dumps(profile),
            )  # fmt: skip
            client.log_inputs(run_id, datasets=[DatasetInput(dataset)])
        for path, document in run.documents.items():
            client.log_dict(run_id, dict(document), path)
        client.set_terminated(run_id, status="FAILED" if run.failed else "FINISHED")
        if run.parent_run_id:
            self._maybe_finish_parent(exp_id, run)
        return run_id

    def _new_params(self, run_id: str, batch_id: str, params: Mapping[str, str]) -> dict[str, str]:
        """The params the run lacks; `InvalidInputError` when the batch id was used for another model,
        input or output (MLflow's params cannot change, and one batch id is one batch)."""
        logged = self._client.get_run(run_id).data.params
        differ = sorted(k for k, v in params.items() if k in logged and logged[k] != v)
        if differ:
            raise InvalidInputError(
                f"batch id {batch_id} was already recorded with another {', '.join(differ[:3])}: "
                "re-run it with the same input and output, or choose another --batch-id"
            )
        return {k: v for k, v in params.items() if k not in logged}

    def _maybe_finish_parent(self, exp_id: str, run: BatchRun) -> None:
        """Sum the children onto the parent and end it, once every shard's run has finished."""
        assert run.parent_run_id is not None
        client = self._client
        flt = mlflow_filters.equals(mlflow_filters.tag(TAG_PARENT_RUN), run.parent_run_id)
        children = client.search_runs([exp_id], flt, max_results=max(run.shards * 2, 100))
        done = {c.data.tags.get(TAG_BATCH_SHARD) for c in children if c.info.status == "FINISHED"}
        if len(done) < run.shards:
            return
        from mlflow.entities import Metric

        sums = {m: sum(float(c.data.metrics.get(m, 0.0)) for c in children) for m in SUMMED}
        client.log_batch(run.parent_run_id, metrics=[Metric(k, v, _now_ms(), 0) for k, v in sums.items()])
        client.set_terminated(run.parent_run_id, status="FINISHED")

    def _experiment_id(self) -> str:
        # a model-training experiment, so the MLflow UI shows its runs (not traces)
        return ensure_experiment(self._client, self._experiment)

    def _find(self, experiment_id: str, batch_id: str, shard: str) -> str | None:
        flt = " and ".join(
            [
                mlflow_filters.equals(mlflow_filters.tag(TAG_BATCH_ID), batch_id),
                mlflow_filters.equals(mlflow_filters.tag(TAG_BATCH_SHARD), shard),
            ]
        )
        found = self._client.search_runs([experiment_id], flt, max_results=1)
        return str(found[0].info.run_id) if found else None


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)


__all__ = [
    "BATCH_EXPERIMENT",
    "DOING",
    "TAG_BATCH_ID",
    "TAG_BATCH_SHARD",
    "TAG_BATCH_SHARDS",
    "BatchDataset",
    "BatchRun",
    "MlflowBatchRuns",
]
