"""The training config: one clear error per bad field, naming its path; overrides; path resolution."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from modelloop.contract.errors import ConfigError
from modelloop.training.config import dump_config, load_config, validate_config

BASE: dict[str, Any] = {
    "model_name": "m",
    "dataset": {"name": "sklearn:iris"},
    "estimator": {"family": "logistic_regression"},
    "metric": {"name": "accuracy"},
}


def with_change(path: str, value: Any) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    node = data
    *parents, last = path.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    if value is ...:
        del node[last]
    else:
        node[last] = value
    return data


def test_minimal_config_gets_defaults() -> None:
    config = validate_config(BASE)
    assert config.task == "classification"
    assert config.direction == "maximize"
    assert config.study_name == "m" and config.experiment_name == "m"
    assert config.promotion.policy == "manual" and config.promotion.alias is None
    assert config.baseline.name == "dummy"
    assert config.split.kind == "random"


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("estimator.family", "xgboost", "estimator.family: unknown estimator 'xgboost'"),
        (
            "estimator.search_space",
            {"C": {"type": "float", "low": 2, "high": 1}},
            "estimator.search_space.C: low must be below high",
        ),
        (
            "estimator.search_space",
            {"C": {"type": "float", "low": 0, "high": 1, "log": True}},
            "estimator.search_space.C: a log range needs low > 0",
        ),
        (
            "estimator.search_space",
            {"nope": {"type": "int", "low": 1, "high": 3}},
            "estimator.search_space.nope: LogisticRegression has no parameter 'nope'",
        ),
        (
            "estimator.search_space",
            {"C": {"type": "gauss"}},
            "estimator.search_space.C: type must be float, int or categorical",
        ),
        (
            "estimator.search_space",
            {"C": {"low": 1, "high": 2}},
            "estimator.search_space.C: give type: float, int or categorical",
        ),
        ("estimator.params", {"C": -1.0}, "estimator.params: The 'C' parameter of LogisticRegression"),
        (
            "estimator.params",
            {"bogus": 1},
            "estimator.params.bogus: LogisticRegression has no parameter 'bogus'",
        ),
        ("metric.name", "rmse", "metric.name: rmse is a regression metric"),
        ("metric.name", "auc", "metric.name: unknown metric 'auc'"),
        ("metric.direction", "minimize", "metric.direction: accuracy is to maximize"),
        ("dataset.path", "data.csv", "dataset: give exactly one of name, path or query"),
        ("dataset", {"path": "rows.txt"}, "dataset.path: must end in .csv or .parquet, or set format"),
        ("dataset", {"query": "SELECT 1"}, "dataset.url: a query needs url"),
        ("dataset.url", "sqlite://", "dataset.url: is only used with query"),
        ("dataset.name", "iris", "dataset.name: must look like sklearn:<dataset>"),
        ("study.n_trials", 0, "study.n_trials: Input should be greater than or equal to 1"),
        (
            "study.storage",
            "redis://x",
            "study.storage: must be a journal:///, sqlite:/// or postgresql:// URL",
        ),
        ("split.kind", "time", "split.time_column: kind time needs time_column"),
        ("split.time_column", "ts", "split.time_column: is only used with kind time"),
        ("split.test_size", 1.5, "split.test_size: Input should be less than 1"),
        ("promotion.alias", "production", "promotion.alias: is only used with policy auto"),
        ("promotion.policy", "sometimes", "promotion.policy: Input should be 'manual' or 'auto'"),
        ("baseline.name", "oracle", "baseline.name:"),
        ("model_name", ..., "model_name: Field required"),
        ("model_name", "team/churn", "model_name: a registered model name cannot contain '/' or ':'"),
        ("model_name", " churn", "model_name: must not be blank or start or end with spaces"),
        ("extra_field", 1, "extra_field: unknown field"),
        ("dataset.colour", "red", "dataset.colour: unknown field"),
    ],
)
def test_each_bad_field_is_named(path: str, value: Any, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        validate_config(with_change(path, value))
    assert str(err.value).startswith(f"config: {expected}"), str(err.value)


def test_stratified_split_needs_a_classifier() -> None:
    data = {
        **BASE,
        "estimator": {"family": "ridge"},
        "metric": {"name": "rmse"},
        "split": {"kind": "stratified"},
    }
    with pytest.raises(
        ConfigError, match=r"split\.kind: a stratified split needs a classification estimator"
    ):
        validate_config(data)


def test_study_needs_a_budget() -> None:
    with pytest.raises(ConfigError, match="give n_trials, timeout or both"):
        validate_config(with_change("study", {"n_trials": None}))


def test_load_config_applies_overrides_as_yaml_scalars(tmp_path: Path) -> None:
    path = tmp_path / "train.yaml"
    path.write_text(
        "model_name: m\ndataset: {name: 'sklearn:wine'}\nestimator: {family: logistic_regression}\n"
        "metric: {name: accuracy}\n",
        encoding="utf-8",
    )
    config = load_config(
        path, ["study.n_trials=3", "promotion.policy=auto", "promotion.alias=production", "seed=7"]
    )
    assert config.study.n_trials == 3
    assert config.promotion.alias == "production"
    assert config.seed == 7


def test_dataset_paths_resolve_against_the_file_or_the_working_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf_dir = tmp_path / "conf"
    conf_dir.mkdir()
    path = conf_dir / "train.yaml"
    path.write_text(
        "model_name: m\ndataset: {path: data/rows.csv}\nestimator: {family: ridge}\nmetric: {name: rmse}\n",
        encoding="utf-8",
    )
    assert load_config(path).dataset.path == (conf_dir / "data" / "rows.csv").resolve()
    monkeypatch.chdir(tmp_path)
    assert (
        load_config(path, ["dataset.path=other.parquet"]).dataset.path
        == (tmp_path / "other.parquet").resolve()
    )


@pytest.mark.parametrize(
    ("text", "overrides", "expected"),
    [
        ("model_name: [unclosed\n", [], "not valid YAML at line"),
        ("- a list\n", [], "the config must be a YAML mapping"),
        ("model_name: m\n", ["noequals"], "expected key.path=value"),
        ("model_name: m\n", ["model_name.x=1"], "model_name is not a mapping"),
    ],
)
def test_file_and_override_problems(tmp_path: Path, text: str, overrides: list[str], expected: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=expected):
        load_config(path, overrides)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read training config"):
        load_config(tmp_path / "absent.yaml")


def test_dumped_config_round_trips() -> None:
    import yaml

    config = validate_config(with_change("study.n_trials", 4))
    assert validate_config(yaml.safe_load(dump_config(config))) == config


#: example files that are not training configs (each has its own test)
NOT_TRAINING_CONFIGS = {"monitoring.yaml"}


def test_examples_are_valid() -> None:
    examples = Path(__file__).parents[3] / "examples"
    paths = sorted(p for p in examples.glob("*.yaml") if p.name not in NOT_TRAINING_CONFIGS)
    assert len(paths) >= 7
    for path in paths:
        load_config(path, ["dataset.path=x.csv"] if path.name == "demo.yaml" else [])
