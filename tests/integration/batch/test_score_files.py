"""`modelloop score` on Parquet and CSV files into Parquet parts: answers, rejects, MLflow run, re-runs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from click.testing import Result

from .conftest import Reference, batch_runs, frame_with_id


def _scored(output: Path) -> pd.DataFrame:
    parts = sorted(output.glob("*.parquet"))
    return pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)


def test_parquet_answers_equal_the_models_own(
    reference: Reference, parquet_input: Path, tmp_path: Path, run_score: Callable[..., Result]
) -> None:
    out = tmp_path / "out"
    done = run_score("--model", reference.ref, "--input", str(parquet_input), "--output", str(out),
                     "--key", "customer_id", "--batch-id", "b1", "--memory-budget", "64M")  # fmt: skip
    assert done.exit_code == 0, done.output
    scored = _scored(out).sort_values("customer_id").reset_index(drop=True)
    assert list(scored.columns) == ["customer_id", "prediction", "proba_0", "proba_1", "model_version"]
    assert scored["customer_id"].tolist() == list(range(1000, 1000 + len(reference.proba)))
    np.testing.assert_array_equal(scored[["proba_0", "proba_1"]].to_numpy(), reference.proba)
    np.testing.assert_array_equal(scored["prediction"].to_numpy(), reference.proba.argmax(axis=1))
    assert set(scored["model_version"]) == {reference.model.version}
    assert "569 rows scored, 0 rejected" in done.output
    assert not list(out.glob(".*"))  # no temporary file left


def test_rejects_are_written_with_reasons_counted_and_recorded(
    reference: Reference, tmp_path: Path, run_score: Callable[..., Result]
) -> None:
    frame = frame_with_id(reference)
    first = frame.columns[1]
    frame.loc[[3, 7], first] = np.nan
    path = tmp_path / "with-nan.parquet"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)
    out = tmp_path / "out"
    done = run_score("--model", reference.ref, "--input", str(path), "--output", str(out),
                     "--key", "customer_id", "--batch-id", "rej")  # fmt: skip
    assert done.exit_code == 0, done.output
    assert "567 rows scored, 2 rejected" in done.output
    rejects = pd.read_parquet(out / "rejects" / "rej-00000.parquet")
    assert rejects["customer_id"].tolist() == [1003, 1007]
    assert set(rejects["reason"]) == {
        f"column '{first}' has no value; the schema requires one"
    }  # pandas NaN -> Parquet null
    assert len(_scored(out)) == 567
    (run,) = batch_runs(reference.tracking_uri, "rej")
    assert run.data.params["model_version"] == reference.model.version
    assert run.data.metrics["rows.scored"] == 567 and run.data.metrics["rows.rejected"] == 2
    assert run.data.params["output"] == str(out)
    assert "drift.share_drifted" in run.data.metrics and "drift.dataset_drifted" in run.data.metrics
    (dataset,) = run.inputs.dataset_inputs
    assert dataset.dataset.digest and dataset.dataset.name == "with-nan.parquet"


def test_a_rerun_with_the_same_batch_id_replaces_rather_than_duplicates(
    reference: Reference, parquet_input: Path, tmp_path: Path, run_score: Callable[..., Result]
) -> None:
    out = tmp_path / "out"
    for _ in range(2):
        done = run_score("--model", reference.ref, "--input", str(parquet_input), "--output", str(out),
                         "--batch-id", "again")  # fmt: skip
        assert done.exit_code == 0, done.output
    assert len(_scored(out)) == len(reference.proba)
    assert _scored(out)["row"].tolist() == list(range(len(reference.proba)))
    assert len(batch_runs(reference.tracking_uri, "again")) == 1


def test_csv_input_by_alias(reference: Reference, tmp_path: Path, run_score: Callable[..., Result]) -> None:
    client = mlflow.MlflowClient(reference.tracking_uri)
    client.set_registered_model_alias(reference.model.name, "production", reference.model.version)
    path = tmp_path / "input.csv"
    frame_with_id(reference).to_csv(path, index=False)
    out = tmp_path / "out"
    done = run_score("--model", f"{reference.model.name}@production", "--input", str(path),
                     "--output", str(out), "--key", "customer_id", "--no-record")  # fmt: skip
    assert done.exit_code == 0, done.output
    scored = _scored(out).sort_values("customer_id")
    np.testing.assert_allclose(scored[["proba_0", "proba_1"]].to_numpy(), reference.proba, rtol=1e-12)
