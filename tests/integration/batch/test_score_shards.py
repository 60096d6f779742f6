"""A Parquet file scored in shards (as the Indexed Job does): every row once, a parent run, a child each."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import mlflow
import pandas as pd
from click.testing import Result

from modelloop.adapters.mlflow_batch_runs import BATCH_EXPERIMENT, TAG_BATCH_ID, TAG_BATCH_SHARD
from modelloop.batch.records import MlflowRecorder

from .conftest import Reference


def test_parquet_shards_cover_every_row_once_under_one_parent_run(
    reference: Reference, parquet_input: Path, tmp_path: Path, run_score: Callable[..., Result]
) -> None:
    out = tmp_path / "out"
    parent = MlflowRecorder(reference.tracking_uri).parent("sharded", 4, model=reference.model.name)
    for index in [2, 0, 3, 1, 2]:  # shard 2 runs twice: a Job's retry of a failed pod
        done = run_score("--model", reference.ref, "--input", str(parquet_input), "--output", str(out),
                         "--key", "customer_id", "--batch-id", "sharded", "--shards", "4",
                         "--shard-index", str(index), "--parent-run", parent)  # fmt: skip
        assert done.exit_code == 0, done.output
    parts = sorted(p.name for p in out.glob("*.parquet"))
    assert parts == [f"sharded-{i:05d}.parquet" for i in range(4)]
    ids = pd.concat([pd.read_parquet(out / p) for p in parts])["customer_id"].sort_values().tolist()
    assert ids == list(range(1000, 1000 + len(reference.proba)))
    client = mlflow.MlflowClient(reference.tracking_uri)
    exp = client.get_experiment_by_name(BATCH_EXPERIMENT)
    assert exp is not None
    runs = client.search_runs([exp.experiment_id], f"tags.`{TAG_BATCH_ID}` = 'sharded'")
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent]
    assert sorted(r.data.tags[TAG_BATCH_SHARD] for r in children) == ["0", "1", "2", "3"]
    parent_run = client.get_run(parent)
    assert parent_run.info.status == "FINISHED"
    assert parent_run.data.metrics["rows.scored"] == len(reference.proba)


def test_shards_without_a_parent_run_find_or_create_it(
    reference: Reference, parquet_input: Path, tmp_path: Path, run_score: Callable[..., Result]
) -> None:
    for index in range(2):
        done = run_score("--model", reference.ref, "--input", str(parquet_input), "--output",
                         str(tmp_path / "out"), "--batch-id", "selfparent", "--shards", "2",
                         "--shard-index", str(index))  # fmt: skip
        assert done.exit_code == 0, done.output
    client = mlflow.MlflowClient(reference.tracking_uri)
    exp = client.get_experiment_by_name(BATCH_EXPERIMENT)
    assert exp is not None
    runs = client.search_runs([exp.experiment_id], f"tags.`{TAG_BATCH_ID}` = 'selfparent'")
    parents = [r for r in runs if r.data.tags[TAG_BATCH_SHARD] == "parent"]
    assert len(parents) == 1 and parents[0].data.metrics["rows.total"] == len(reference.proba)
