"""Bad input against a real MLflow server and PostgreSQL: one clear error, and no model version (nor run)
left behind."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.entities import ViewType

from modelloop.contract.errors import ConfigError, InvalidInputError, ModelloopError, UnavailableError
from modelloop.deploy.mlflow_server import free_port
from modelloop.training import run_training
from tests.integration.training.conftest import tiny_config


def write_csv(path: Path, frame: pd.DataFrame) -> Path:
    frame.to_csv(path, index=False)
    return path


def assert_nothing_registered(client: MlflowClient, name: str) -> None:
    assert client.search_registered_models(filter_string=f"name = '{name}'") == []
    assert client.search_model_versions(f"name = '{name}'") == []


@pytest.mark.parametrize(
    ("frame", "changes", "error", "message"),
    [
        (
            pd.DataFrame({"a": [1.0, 2.0] * 10, "label": [0, 1] * 10}),
            {},
            InvalidInputError,
            "no target column 'target'",
        ),
        (
            pd.DataFrame({"a": pd.Series([], dtype=float), "target": pd.Series([], dtype=int)}),
            {},
            InvalidInputError,
            "the dataset is empty",
        ),
        (
            pd.DataFrame({"a": range(20), "target": [1] * 20}),
            {},
            InvalidInputError,
            "has one class; a classifier needs at least two",
        ),
        (
            pd.DataFrame({"a": range(20), "target": [0, 1] * 10}),
            {"dataset__features": ["a", "b"]},
            InvalidInputError,
            "no column 'b' (dataset.features)",
        ),
        (
            pd.DataFrame({"a": range(20), "target": [0] * 19 + [1]}),
            {},
            InvalidInputError,
            "every class; the rarest class has 1",
        ),
    ],
    ids=["missing-target", "empty", "one-class", "missing-feature", "rare-class"],
)
def test_bad_data_leaves_nothing_behind(
    tracking_uri: str,
    model_name: str,
    tmp_path: Path,
    frame: pd.DataFrame,
    changes: dict[str, object],
    error: type[ModelloopError],
    message: str,
) -> None:
    path = write_csv(tmp_path / "rows.csv", frame)
    config = tiny_config(model_name, dataset={"path": str(path)}, **changes)
    with pytest.raises(error) as err:
        run_training(config, tracking_uri=tracking_uri)
    assert message in str(err.value)
    client = MlflowClient(tracking_uri)
    assert_nothing_registered(client, model_name)
    assert client.get_experiment_by_name(model_name) is None  # checked before any run was created


def test_unreachable_mlflow_is_unavailable(model_name: str) -> None:
    with pytest.raises(UnavailableError, match=r"cannot reach MLflow at http://127\.0\.0\.1:\d+"):
        run_training(tiny_config(model_name), tracking_uri=f"http://127.0.0.1:{free_port()}")


def test_unreachable_databases_are_unavailable(tracking_uri: str, model_name: str, postgres_url: str) -> None:
    import sqlalchemy as sa

    dead = sa.make_url(postgres_url).set(port=free_port()).render_as_string(hide_password=False)
    sql = tiny_config(model_name, dataset={"query": "SELECT 1 AS a, 0 AS target", "url": dead})
    with pytest.raises(UnavailableError, match="cannot reach the dataset database") as err:
        run_training(sql, tracking_uri=tracking_uri)
    assert "modelloop-test" not in str(err.value)  # the password is never shown
    storage = tiny_config(model_name, study__storage=dead)
    with pytest.raises(UnavailableError, match="cannot reach the Optuna storage") as err:
        run_training(storage, tracking_uri=tracking_uri)
    assert "modelloop-test" not in str(err.value)
    assert_nothing_registered(MlflowClient(tracking_uri), model_name)


def test_sql_query_error_names_the_query(tracking_uri: str, model_name: str, postgres_url: str) -> None:
    bad = tiny_config(model_name, dataset={"query": "SELECT * FROM no_such_table", "url": postgres_url})
    with pytest.raises(InvalidInputError, match=r"dataset\.query failed"):
        run_training(bad, tracking_uri=tracking_uri)


def test_a_refused_alias_leaves_no_version_behind(tracking_uri: str, model_name: str) -> None:
    # MLflow reserves `latest`; the version is created first, then removed again with its registered model
    config = tiny_config(model_name, promotion__policy="auto", promotion__alias="latest")
    with pytest.raises(ConfigError, match=r"promotion\.alias: MLflow refuses the alias 'latest'"):
        run_training(config, tracking_uri=tracking_uri)
    client = MlflowClient(tracking_uri)
    assert_nothing_registered(client, model_name)
    runs = client.search_runs(
        [client.get_experiment_by_name(model_name).experiment_id],
        filter_string="tags.`modelloop.kind` = 'training'",
    )
    assert [r.info.status for r in runs] == ["FAILED"]


def test_a_deleted_experiment_is_named(tracking_uri: str, model_name: str, tmp_path: Path) -> None:
    client = MlflowClient(tracking_uri)
    client.delete_experiment(client.create_experiment(model_name))
    config = tiny_config(model_name, study__storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    with pytest.raises(
        InvalidInputError, match=f"the MLflow experiment '{model_name}' is deleted; restore it"
    ):
        run_training(config, tracking_uri=tracking_uri)
    assert not (tmp_path / "optuna.db").exists()  # refused before the study was created
    assert_nothing_registered(client, model_name)
    deleted = client.get_experiment_by_name(model_name)
    assert deleted is not None and deleted.lifecycle_stage == "deleted"
    assert client.search_runs([deleted.experiment_id], run_view_type=ViewType.ALL) == []
