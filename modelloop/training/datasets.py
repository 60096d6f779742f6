"""Dataset sources a training reads: scikit-learn's bundled datasets, CSV/Parquet files, and SQL queries.

`load_dataset(config)` returns the raw table and a description of where it came from (for MLflow lineage);
`prepare(frame, ...)` checks it against the config (target and feature columns present, rows left, at least
two
classes for a classifier) and returns features and target. Every problem is one `InvalidInputError` naming the
column or the problem, never the data; an unreachable database is an `UnavailableError`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.data.dataset_source import DatasetSource

from modelloop.contract.errors import ConfigError, InvalidInputError, UnavailableError
from modelloop.training.config import DatasetConfig

log = logging.getLogger(__name__)

#: scikit-learn datasets that ship with the package (no download).
SKLEARN_DATASETS = ("breast_cancer", "diabetes", "iris", "wine", "digits")


class NamedDatasetSource(DatasetSource):
    """A dataset source MLflow has no type for (a scikit-learn dataset or a SQL query), kept as lineage."""

    def __init__(self, uri: str, query: str | None = None) -> None:
        self._uri = uri
        self._query = query

    @staticmethod
    def _get_source_type() -> str:
        return "modelloop"

    def load(self, **kwargs: Any) -> str:
        raise NotImplementedError("load the dataset through modelloop.training.datasets.load_dataset")

    @staticmethod
    def _can_resolve(raw_source: Any) -> bool:
        return False

    @classmethod
    def _resolve(cls, raw_source: Any) -> NamedDatasetSource:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"uri": self._uri}
        if self._query is not None:
            out["query"] = self._query
        return out

    @classmethod
    def from_dict(cls, source_dict: dict[Any, Any]) -> NamedDatasetSource:
        return cls(str(source_dict["uri"]), source_dict.get("query"))


@dataclass(frozen=True)
class LoadedDataset:
    """A raw table and where it came from."""

    frame: pd.DataFrame
    name: str  # short name for MLflow's dataset list
    source: DatasetSource


def load_dataset(config: DatasetConfig) -> LoadedDataset:
    """Read the rows a config names."""
    if config.name is not None:
        return _load_sklearn(config.name)
    if config.path is not None:
        return _load_file(config.path, config.format)
    assert config.query is not None and config.url is not None
    return _load_sql(config.query, config.url)


def _load_sklearn(name: str) -> LoadedDataset:
    import sklearn.datasets

    short = name.removeprefix("sklearn:")
    if short not in SKLEARN_DATASETS:
        raise ConfigError(
            f"dataset.name: unknown scikit-learn dataset {short!r}; "
            f"choose one of {', '.join(SKLEARN_DATASETS)}"
        )
    bunch = getattr(sklearn.datasets, f"load_{short}")(as_frame=True)
    frame: pd.DataFrame = bunch.frame.copy()
    # MLflow signatures and serving tensors name columns; spaces make poor names
    frame.columns = [str(c).replace(" ", "_") for c in frame.columns]
    return LoadedDataset(frame=frame, name=short, source=NamedDatasetSource(name))


def _load_file(path: Path, fmt: str | None) -> LoadedDataset:
    from mlflow.data.filesystem_dataset_source import FileSystemDatasetSource
    from mlflow.data.sources import LocalArtifactDatasetSource  # type: ignore[attr-defined]

    kind = fmt or ("csv" if path.suffix.lower() == ".csv" else "parquet")
    if not path.is_file():
        raise InvalidInputError(f"dataset file {path} does not exist")
    try:
        frame = pd.read_csv(path) if kind == "csv" else pd.read_parquet(path)
    except pd.errors.EmptyDataError:
        raise InvalidInputError(f"dataset file {path} is empty") from None
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise InvalidInputError(
            f"dataset file {path} cannot be read as {kind}: {type(exc).__name__}"
        ) from None
    frame.columns = [str(c) for c in frame.columns]
    source: FileSystemDatasetSource = LocalArtifactDatasetSource(str(path.resolve()))
    return LoadedDataset(frame=frame, name=path.stem, source=source)


def _load_sql(query: str, url: str) -> LoadedDataset:
    import sqlalchemy as sa

    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError:
        raise ConfigError("dataset.url: not a SQLAlchemy URL") from None
    safe_url = parsed.render_as_string(hide_password=True)
    try:
        engine = sa.create_engine(parsed)
    except (sa.exc.ArgumentError, ImportError) as exc:
        raise ConfigError(f"dataset.url: cannot use {safe_url}: {type(exc).__name__}") from None
    try:
        with engine.connect() as conn:
            frame = pd.read_sql_query(sa.text(query), conn)
    except sa.exc.OperationalError:
        # raised by connect(): the database cannot be reached (a failing query comes wrapped by pandas)
        raise UnavailableError(f"cannot reach the dataset database {safe_url}") from None
    except (pd.errors.DatabaseError, sa.exc.DBAPIError) as exc:
        cause = exc.__cause__ if isinstance(exc, pd.errors.DatabaseError) else exc
        orig = cause.orig if isinstance(cause, sa.exc.DBAPIError) else cause
        raise InvalidInputError(f"dataset.query failed on {safe_url}: {_first_line(orig)}") from None
    finally:
        engine.dispose()
    frame.columns = [str(c) for c in frame.columns]
    return LoadedDataset(
        frame=frame, name=parsed.database or "sql", source=NamedDatasetSource(safe_url, query)
    )


def _first_line(exc: BaseException | None) -> str:
    text = str(exc or "").strip()
    return text.splitlines()[0][:200] if text else "unknown error"


@dataclass(frozen=True)
class Prepared:
    """Features, target and (for time splits) the ordering column, rows aligned."""

    x: pd.DataFrame
    y: pd.Series
    time: pd.Series | None


def prepare(
    frame: pd.DataFrame,
    *,
    target: str,
    task: str,
    features: list[str] | None,
    drop: list[str],
    time_column: str | None,
) -> Prepared:
    """Check the table against the config and split it into features and target."""
    if frame.shape[0] == 0:
        raise InvalidInputError("the dataset is empty (no rows)")
    if target not in frame.columns:
        raise InvalidInputError(f"the dataset has no target column {target!r}")
    if time_column is not None and time_column not in frame.columns:
        raise InvalidInputError(f"the dataset has no time column {time_column!r} (split.time_column)")
    for col in [*(features or []), *drop]:
        if col not in frame.columns:
            field = "dataset.features" if col in (features or []) else "dataset.drop"
            raise InvalidInputError(f"the dataset has no column {col!r} ({field})")
    excluded = {target, *drop, *([time_column] if time_column else [])}
    names = features if features is not None else [c for c in frame.columns if c not in excluded]
    if target in names:
        raise InvalidInputError(f"the target column {target!r} is also listed as a feature")
    if not names:
        raise InvalidInputError("the dataset has no feature columns left")
    missing_target = frame[target].isna()
    if missing_target.all():
        raise InvalidInputError(f"the target column {target!r} has no values")
    if missing_target.any():
        log.warning("%d of %d rows have no target value and are left out", missing_target.sum(), len(frame))
        frame = frame.loc[~missing_target]
    y = frame[target]
    if task == "classification":
        n_classes = y.nunique()
        if n_classes < 2:
            raise InvalidInputError(
                f"the target column {target!r} has one class; a classifier needs at least two"
            )
    elif not pd.api.types.is_numeric_dtype(y) or pd.api.types.is_bool_dtype(y):
        raise InvalidInputError(f"the target column {target!r} is not numeric; a regressor needs numbers")
    time = frame[time_column] if time_column else None
    return Prepared(
        x=frame[names].reset_index(drop=True),
        y=y.reset_index(drop=True),
        time=(time.reset_index(drop=True) if time is not None else None),
    )


__all__ = ["SKLEARN_DATASETS", "LoadedDataset", "NamedDatasetSource", "Prepared", "load_dataset", "prepare"]
