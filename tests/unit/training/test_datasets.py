"""Dataset sources (scikit-learn, CSV, Parquet, SQL over SQLite) and the train/validation/test splits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from modelloop.contract.errors import ConfigError, InvalidInputError
from modelloop.training.config import DatasetConfig, SplitConfig
from modelloop.training.datasets import load_dataset, prepare
from modelloop.training.splits import split


def rows(n: int = 100) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "when": pd.date_range("2026-01-01", periods=n, freq="h").astype(str)[::-1],
            "x": rng.normal(size=n),
            "colour": rng.choice(["red", "blue"], size=n),
            "id": np.arange(n),
            "target": np.arange(n) % 3,
        }
    )


@pytest.mark.parametrize("name", ["breast_cancer", "diabetes", "iris", "wine"])
def test_sklearn_datasets_load_with_a_target_column(name: str) -> None:
    loaded = load_dataset(DatasetConfig(name=f"sklearn:{name}"))
    assert "target" in loaded.frame.columns and len(loaded.frame) > 100
    assert not any(" " in c for c in loaded.frame.columns)
    assert loaded.source.to_dict() == {"uri": f"sklearn:{name}"}


def test_unknown_sklearn_dataset_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"dataset\.name: unknown scikit-learn dataset 'mnist'"):
        load_dataset(DatasetConfig(name="sklearn:mnist"))


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_files_load(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"rows{suffix}"
    frame = rows()
    frame.to_csv(path, index=False) if suffix == ".csv" else frame.to_parquet(path)
    loaded = load_dataset(DatasetConfig(path=path))
    assert loaded.frame.shape == frame.shape and loaded.name == "rows"
    assert loaded.source.to_dict()["uri"] == str(path.resolve())


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="does not exist"):
        load_dataset(DatasetConfig(path=tmp_path / "absent.csv"))
    empty = tmp_path / "empty.csv"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(InvalidInputError, match="is empty"):
        load_dataset(DatasetConfig(path=empty))
    bad = tmp_path / "bad.parquet"
    bad.write_text("not parquet", encoding="utf-8")
    with pytest.raises(InvalidInputError, match="cannot be read as parquet"):
        load_dataset(DatasetConfig(path=bad))


def test_sql_query_against_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'rows.db'}"
    engine = sa.create_engine(url)
    rows().to_sql("rows", engine, index=False)
    engine.dispose()
    loaded = load_dataset(DatasetConfig(query="SELECT x, colour, target FROM rows WHERE id < 50", url=url))
    assert list(loaded.frame.columns) == ["x", "colour", "target"] and len(loaded.frame) == 50
    assert loaded.source.to_dict()["query"].startswith("SELECT x")


def test_prepare_selects_features() -> None:
    prepared = prepare(
        rows(), target="target", task="classification", features=None, drop=["id"], time_column="when"
    )
    assert list(prepared.x.columns) == ["x", "colour"]
    assert prepared.time is not None
    only = prepare(rows(), target="target", task="classification", features=["x"], drop=[], time_column=None)
    assert list(only.x.columns) == ["x"]


def test_rows_without_target_are_left_out_and_reported(caplog: pytest.LogCaptureFixture) -> None:
    frame = rows().astype({"target": float})
    frame.loc[:9, "target"] = np.nan
    prepared = prepare(frame, target="target", task="regression", features=None, drop=[], time_column=None)
    assert len(prepared.y) == 90
    assert "10 of 100 rows have no target value" in caplog.text


@pytest.mark.parametrize(
    ("frame", "kwargs", "message"),
    [
        (rows().head(0), {}, "the dataset is empty"),
        (rows(), {"target": "label"}, "no target column 'label'"),
        (rows(), {"features": ["x", "nope"]}, "no column 'nope' (dataset.features)"),
        (rows(), {"drop": ["nope"]}, "no column 'nope' (dataset.drop)"),
        (rows(), {"time_column": "nope"}, "no time column 'nope'"),
        (rows(), {"features": ["target"]}, "also listed as a feature"),
        (rows().assign(target=1), {}, "has one class"),
        (rows().assign(target="a"), {"task": "regression"}, "is not numeric"),
        (rows().assign(target=np.nan), {}, "has no values"),
        (rows()[["target"]], {}, "no feature columns left"),
    ],
)
def test_prepare_rejects_bad_tables(frame: pd.DataFrame, kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {
        "target": "target",
        "task": "classification",
        "features": None,
        "drop": [],
        "time_column": None,
        **kwargs,
    }
    with pytest.raises(InvalidInputError) as err:
        prepare(frame, **args)  # type: ignore[arg-type]
    assert message in str(err.value)


def test_random_and_stratified_splits() -> None:
    prepared = prepare(
        rows(200), target="target", task="classification", features=None, drop=[], time_column=None
    )
    for kind in ("random", "stratified"):
        parts = split(prepared, SplitConfig(kind=kind, test_size=0.25, validation_size=0.2), seed=1)  # type: ignore[arg-type]
        assert len(parts.x_test) == 50 and len(parts.x_val) == 30 and len(parts.x_train) == 120
        everything = set(parts.x_train.index) | set(parts.x_val.index) | set(parts.x_test.index)
        assert len(everything) == 200
    strat = split(prepared, SplitConfig(kind="stratified", test_size=0.3), seed=1)
    shares = strat.y_test.value_counts(normalize=True)
    assert shares.max() - shares.min() < 0.05
    assert len(strat.fit_x) == len(strat.fit_y) == 140


def test_time_split_tests_on_the_latest_rows() -> None:
    prepared = prepare(
        rows(100), target="target", task="classification", features=None, drop=[], time_column="when"
    )
    parts = split(
        prepared, SplitConfig(kind="time", time_column="when", test_size=0.2, validation_size=0.25), seed=0
    )
    when = pd.to_datetime(prepared.time)
    assert when[parts.x_train.index].max() < when[parts.x_val.index].min()
    assert when[parts.x_val.index].max() < when[parts.x_test.index].min()
    assert len(parts.x_test) == 20 and len(parts.x_val) == 20


def test_time_column_must_hold_times() -> None:
    frame = rows().assign(when="soon")
    prepared = prepare(
        frame, target="target", task="classification", features=None, drop=[], time_column="when"
    )
    with pytest.raises(InvalidInputError, match="holds neither numbers nor dates"):
        split(prepared, SplitConfig(kind="time", time_column="when"), seed=0)


def test_too_few_rows_for_a_stratified_split() -> None:
    frame = pd.DataFrame({"x": range(6), "target": [0, 0, 0, 0, 0, 1]})
    prepared = prepare(
        frame, target="target", task="classification", features=None, drop=[], time_column=None
    )
    with pytest.raises(InvalidInputError, match="rarest class has 1"):
        split(prepared, SplitConfig(kind="stratified"), seed=0)
