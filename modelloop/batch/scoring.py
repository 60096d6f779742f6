"""The batch loop: read a chunk, validate it, predict, write the answers and the rejects; then record.

Called by `modelloop score` (`cli/score.py`), locally or in one index of the chart's Indexed Job, and by the
bench. `score_batch(job)`:

1. loads the version exactly as the scoring server does (`serving.model_host.load_model`: the registry's
   alias or version, the signature, the unseen-category policy from the reference profile, the numeric fast
   path), with a chunk size derived from `memory_budget`;
2. for each chunk of this shard's share of the input (`batch.sources`): splits it into rows and rejects
   (`batch.rows`), predicts the rows, and writes both to the sink (`batch.sinks`), offering the rows to a
   bounded sample for the drift summary (`batch.sample`), and shows progress (`batch.progress`);
3. commits the sink (nothing was visible before; on any failure the sink is aborted and nothing is left);
4. measures the sample's drift against the version's reference profile (the one the loader read for the
   unseen-category policy: no second download), and hands the result to the recorder
   (`batch.records`: the MLflow run). A record that fails after the commit is reported as such; re-running
   the same batch id replaces the output and continues the same run.

Memory: `memory_budget` bounds the whole process. Once the model is loaded, what the process already uses
(interpreter, libraries, model: about 500 MiB for the reference model) is taken from the budget; chunks get
half of the rest at about `_BYTES_PER_VALUE` bytes per value (Arrow batch, numpy matrix, answers, output
table), the drift sample an eighth. A budget below what is already used gets the smallest chunks, with a
warning. Measured on the reference model, 1,000,000 rows x 30: peak RSS 649 MiB with a 1 GiB budget.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from modelloop.contract.errors import InvalidInputError, ModelloopError
from modelloop.contract.model_ref import parse_model_ref
from modelloop.serving.errors import clip_names
from modelloop.serving.model_host import LoadedModel, load_model

from .progress import Progress
from .rows import CheckedChunk, check_chunk, check_columns, column_types
from .sample import DriftReport, InputSample
from .shards import WHOLE, Shard
from .sinks import Sink
from .sources import CsvSource, ParquetSource, Source

if TYPE_CHECKING:
    from modelloop.contract.profile import ReferenceProfile

log = logging.getLogger(__name__)

#: bytes a chunk costs per input value, all copies together (measured on the reference model: about 40)
_BYTES_PER_VALUE = 48
MIN_CHUNK_ROWS = 1_024
MAX_CHUNK_ROWS = 262_144
ROW_COLUMN = "row"
DEFAULT_MEMORY_BUDGET = 1 << 30


def resident_bytes() -> int:
    """The peak resident memory of this process so far."""
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def chunk_rows_for(budget: int, n_columns: int) -> int:
    """Rows per chunk so that a chunk takes about half of `budget` bytes (what is left of the budget)."""
    rows = max(budget, 0) // 2 // (max(1, n_columns) * _BYTES_PER_VALUE)
    return int(min(MAX_CHUNK_ROWS, max(MIN_CHUNK_ROWS, rows)))


def sample_capacity_for(budget: int, n_columns: int) -> int:
    """Rows of the drift sample: an eighth of `budget`, at most 100,000."""
    return int(min(100_000, max(1_000, budget // 8 // (max(1, n_columns) * 8 * 2))))


@dataclass(frozen=True)
class BatchResult:
    """What a shard did."""

    batch_id: str
    shard: Shard
    model: str
    version: str
    scored: int
    rejected: int
    seconds: float
    output: str
    input_location: str
    input_kind: str
    input_digest: str
    drift: DriftReport | None = None
    reject_reasons: dict[str, int] = field(default_factory=dict)
    run_id: str | None = None

    @property
    def rows(self) -> int:
        return self.scored + self.rejected

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        """The one-paragraph summary `modelloop score` prints."""
        text = (
            f"batch {self.batch_id} shard {self.shard}: model {self.model} version {self.version}: "
            f"{self.scored:,} rows scored, {self.rejected:,} rejected, in {self.seconds:.1f} s "
            f"({self.rows_per_second:,.0f} rows/s) -> {self.output}"
        )
        for reason, count in sorted(self.reject_reasons.items(), key=lambda kv: -kv[1])[:5]:
            text += f"\n  rejected {count:,}: {reason}"
        if self.drift is not None:
            s = self.drift.summary
            text += (
                f"\n  drift on {self.drift.sample_rows:,} sampled rows: {s.drifted} of {s.evaluated} "
                f"features drifted ({'dataset drifted' if s.dataset_drifted else 'dataset not drifted'})"
            )
        if self.run_id:
            text += f"\n  MLflow run {self.run_id}"
        return text


Recorder = Callable[[BatchResult, LoadedModel], str | None]


@dataclass
class BatchJob:
    """One shard of one batch: what to score, with which model, where to put it (see the module docstring)."""

    model: str  # NAME@ALIAS or NAME/VERSION
    tracking_uri: str
    source: Source
    sink: Sink
    batch_id: str
    shard: Shard = WHOLE
    keys: tuple[str, ...] = ()
    memory_budget: int = DEFAULT_MEMORY_BUDGET
    progress: bool = True
    drift: bool = True
    #: writes the MLflow record (`batch.records.MlflowRecorder`); None records nothing
    recorder: Recorder | None = None
    loader: Callable[..., LoadedModel] = load_model


class _Outputs:
    """Builds the output and rejects tables of a chunk (keys or row numbers, answers, version)."""

    def __init__(self, model: LoadedModel, keys: tuple[str, ...]) -> None:
        self.model = model
        self.keys = keys
        classes = model.schema.classes
        self.proba_names = [f"proba_{c}" for c in classes] if classes is not None else []
        self.scored_schema: pa.Schema | None = None
        self.rejects_schema: pa.Schema | None = None

    def _ids(self, first_row: int, batch: pa.RecordBatch, positions: np.ndarray[Any, Any]) -> dict[str, Any]:
        if not self.keys:
            return {ROW_COLUMN: pa.array(first_row + positions, type=pa.int64())}
        if positions.size == batch.num_rows:  # every row (positions are sorted): no copy
            return {k: batch.column(k) for k in self.keys}
        take = pa.array(positions, type=pa.int64())
        return {k: batch.column(k).take(take) for k in self.keys}

    def tables(
        self, first_row: int, batch: pa.RecordBatch, checked: CheckedChunk
    ) -> tuple[pa.Table, pa.Table]:
        version = self.model.version
        scored: dict[str, Any] = self._ids(first_row, batch, checked.accepted)
        if checked.features is not None:
            pred, proba = self.model.predict(checked.features)
            scored["prediction"] = pa.array(np.asarray(pred))
            for i, name in enumerate(self.proba_names):
                values = np.asarray(proba)[:, i] if proba is not None else np.full(len(pred), np.nan)
                scored[name] = pa.array(values)
        scored["model_version"] = _repeated(version, checked.accepted.size)
        rejects: dict[str, Any] = self._ids(first_row, batch, checked.rejected)
        rejects["reason"] = pa.array(checked.reasons, type=pa.string())
        rejects["model_version"] = _repeated(version, checked.rejected.size)
        scored_table = pa.table(scored) if checked.features is not None else None
        rejects_table = pa.table(rejects)
        if scored_table is not None and self.scored_schema is None:
            self.scored_schema = scored_table.schema
        if self.rejects_schema is None:
            self.rejects_schema = rejects_table.schema
        empty = (self.scored_schema or self.fallback_scored()).empty_table()
        return scored_table if scored_table is not None else empty, rejects_table

    def fallback_scored(self) -> pa.Schema:
        ids = [pa.field(k, pa.string()) for k in self.keys] or [pa.field(ROW_COLUMN, pa.int64())]
        answers = [pa.field(n, pa.float64()) for n in ["prediction", *self.proba_names]]
        return pa.schema([*ids, *answers, pa.field("model_version", pa.string())])

    def fallback_rejects(self) -> pa.Schema:
        ids = [pa.field(k, pa.string()) for k in self.keys] or [pa.field(ROW_COLUMN, pa.int64())]
        return pa.schema([*ids, pa.field("reason", pa.string()), pa.field("model_version", pa.string())])


def _repeated(text: str, n: int) -> pa.Array:
    """A string column of `n` times `text`."""
    return pa.repeat(pa.scalar(text, type=pa.string()), int(n))


def _check_input(model: LoadedModel, source: Source, names: list[str], keys: tuple[str, ...]) -> None:
    check_columns(model.schema, names)
    missing = [k for k in keys if k not in names]
    if missing:
        raise InvalidInputError(f"key column(s) {clip_names(missing)} are not in the input")


def score_batch(job: BatchJob) -> BatchResult:
    """Score one shard of a batch (see the module docstring); the sink is aborted on any failure."""
    try:
        return _score(job)
    except BaseException:
        job.sink.abort()
        raise


def _score(job: BatchJob) -> BatchResult:
    started = time.monotonic()
    name, ref = parse_model_ref(job.model)
    source = job.source
    known = source.column_names()
    model = job.loader(job.tracking_uri, name, ref, max_rows=MAX_CHUNK_ROWS)
    schema = model.schema
    free = job.memory_budget - resident_bytes()
    if free < job.memory_budget // 4:
        log.warning(
            "the memory budget (%d MiB) leaves %d MiB beside the model and libraries; smallest chunks used",
            job.memory_budget >> 20,
            max(free, 0) >> 20,
        )
    chunk_rows = chunk_rows_for(free, max(len(known), len(schema.names), 1))
    if known:  # a query's columns are known once it runs
        _check_input(model, source, known, job.keys)
    if isinstance(source, CsvSource):
        source.column_types = column_types(schema)
    if isinstance(source, ParquetSource):
        source.select([c for c in known if c in schema.positions or c in job.keys])
    outputs = _Outputs(model, job.keys)
    sample = InputSample(schema.names, capacity=sample_capacity_for(max(free, 0), len(schema.names)))
    total = source.total_rows() if isinstance(source, ParquetSource) else None
    progress = Progress(total, enabled=job.progress)
    scored = rejected = 0
    reasons: dict[str, int] = {}
    checked_columns = bool(known)
    for chunk in source.chunks(chunk_rows):
        if not checked_columns:
            _check_input(model, source, list(chunk.batch.schema.names), job.keys)
            checked_columns = True
        checked = check_chunk(schema, chunk.batch)
        scored_table, rejects_table = outputs.tables(chunk.first_row, chunk.batch, checked)
        job.sink.write(scored_table, rejects_table)
        if job.drift and checked.accepted.size:
            sample.add(chunk.batch, checked.accepted)
        for reason in checked.reasons:
            reasons[reason] = reasons.get(reason, 0) + 1
        scored += int(checked.accepted.size)
        rejected += int(checked.rejected.size)
        progress.advance(chunk.batch.num_rows)
    job.sink.commit(
        outputs.scored_schema or outputs.fallback_scored(),
        outputs.rejects_schema or outputs.fallback_rejects(),
    )
    progress.done()
    result = BatchResult(
        batch_id=job.batch_id, shard=job.shard, model=name, version=model.version, scored=scored,
        rejected=rejected, seconds=time.monotonic() - started, output=job.sink.location,
        input_location=source.location, input_kind=source.kind, input_digest=source.digest(),
        drift=_drift(job, model, sample), reject_reasons=reasons,
    )  # fmt: skip
    if job.recorder is not None:
        result = _with_run(result, job.recorder(result, model))
    return result


def _with_run(result: BatchResult, run_id: str | None) -> BatchResult:
    from dataclasses import replace

    return replace(result, run_id=run_id)


def _drift(job: BatchJob, model: LoadedModel, sample: InputSample) -> DriftReport | None:
    """The sample's drift against the version's reference profile; None without one (logged)."""
    if not job.drift or not sample.rows:
        return None
    profile = model.profile if model.profile is not None else _read_profile(job, model)
    if profile is None:
        return None
    features, summary = sample.drift(profile)
    return DriftReport(sample.rows, features, summary)


def _read_profile(job: BatchJob, model: LoadedModel) -> ReferenceProfile | None:
    """The profile from the registry, for a model whose loader kept none (the loader reads it once)."""
    from modelloop.adapters.mlflow_registry import MlflowModelRegistry

    try:
        return MlflowModelRegistry(job.tracking_uri).reference_profile(model.name, model.version)
    except ModelloopError as exc:
        log.info("model %s/%s: no reference profile, no drift summary (%s)", model.name, model.version, exc)
        return None


__all__ = [
    "DEFAULT_MEMORY_BUDGET",
    "BatchJob",
    "BatchResult",
    "Recorder",
    "chunk_rows_for",
    "sample_capacity_for",
    "score_batch",
]
