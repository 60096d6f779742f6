"""The training config: one YAML file describing a training, validated field by field.

`load_config(path, overrides)` is called by `modelloop train` (and by anything that starts a training, such as
the retraining trigger); it reads the YAML, applies `--set key.path=value` overrides (values parsed as YAML
scalars) and returns a `TrainingConfig`. Every problem becomes one `ConfigError` naming the field's path, e.g.
`estimator.family: unknown estimator 'xgb'; choose one of ...`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from modelloop.contract.errors import ConfigError
from modelloop.training.custom_estimator import (
    ImportPathError,
    add_code_paths,
    check_class,
    class_task,
    import_function,
)
from modelloop.training.estimators import FAMILIES, check_search_space, family_task
from modelloop.training.metrics import METRICS, metric_direction, metric_task


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _FieldError(ValueError):
    """A cross-field problem that belongs to one named field (its path below the model that raises it)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


class DatasetConfig(_Strict):
    """Where the rows come from: exactly one of `name`, `path` or `query` (with `url`)."""

    name: str | None = Field(
        default=None, description="A dataset that ships with scikit-learn, e.g. `sklearn:breast_cancer`."
    )
    path: Path | None = Field(default=None, description="A CSV or Parquet file (by its suffix or `format`).")
    format: Literal["csv", "parquet"] | None = Field(default=None, description="File format of `path`.")
    query: str | None = Field(default=None, description="A SQL query run against `url`.")
    url: str | None = Field(default=None, description="SQLAlchemy URL the `query` runs against.")
    features: list[str] | None = Field(
        default=None, description="Feature columns to use (default: every column but target and time)."
    )
    drop: list[str] = Field(default_factory=list, description="Columns never used as features (ids).")

    @model_validator(mode="after")
    def _one_source(self) -> DatasetConfig:
        given = [k for k in ("name", "path", "query") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of name, path or query")
        if self.query is not None and not self.url:
            raise _FieldError("url", "a query needs url (a SQLAlchemy URL)")
        if self.url is not None and self.query is None:
            raise _FieldError("url", "is only used with query")
        if self.name is not None and not self.name.startswith("sklearn:"):
            raise _FieldError("name", "must look like sklearn:<dataset>, e.g. sklearn:breast_cancer")
        if (
            self.path is not None
            and self.format is None
            and self.path.suffix.lower()
            not in {
                ".csv",
                ".parquet",
                ".pq",
            }
        ):
            raise _FieldError("path", "must end in .csv or .parquet, or set format")
        return self


class SplitConfig(_Strict):
    """How rows are split into train (with a validation part for the trials) and test."""

    kind: Literal["random", "stratified", "time"] = Field(
        default="random", description="random, stratified (classification) or time (out-of-time test)."
    )
    test_size: float = Field(default=0.2, gt=0.0, lt=1.0, description="Share of rows held out for test.")
    validation_size: float = Field(
        default=0.2, gt=0.0, lt=1.0, description="Share of the training rows the trials are scored on."
    )
    time_column: str | None = Field(default=None, description="Column ordering rows (kind: time).")

    @model_validator(mode="after")
    def _time_column(self) -> SplitConfig:
        if self.kind == "time" and not self.time_column:
            raise _FieldError("time_column", "kind time needs time_column (the column ordering the rows)")
        if self.kind != "time" and self.time_column:
            raise _FieldError("time_column", "is only used with kind time")
        return self


class FloatRange(_Strict):
    type: Literal["float"]
    low: float
    high: float
    log: bool = False

    @model_validator(mode="after")
    def _order(self) -> FloatRange:
        if self.low >= self.high:
            raise ValueError("low must be below high")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        return self


class IntRange(_Strict):
    type: Literal["int"]
    low: int
    high: int
    log: bool = False

    @model_validator(mode="after")
    def _order(self) -> IntRange:
        if self.low >= self.high:
            raise ValueError("low must be below high")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        return self


class Choice(_Strict):
    type: Literal["categorical"]
    choices: list[str | int | float | bool | None] = Field(min_length=1)


Distribution = Annotated[FloatRange | IntRange | Choice, Field(discriminator="type")]
#: discriminator tags pydantic puts in error locations; not field names
_UNION_TAGS = {"float", "int", "categorical"}


class EstimatorConfig(_Strict):
    """What is tuned: exactly one of a built-in `family`, a scikit-learn-API `class` by import path, or your
    own training code (`objective: package.module:function`); its fixed parameters, the space the study
    searches, and how the model is serialised."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    family: str | None = Field(default=None, description="One of modelloop.training.estimators.FAMILIES.")
    class_: str | None = Field(
        default=None,
        alias="class",
        description="Import path of a class following scikit-learn's estimator API, e.g. "
        "lightgbm.LGBMClassifier.",
    )
    objective: str | None = Field(
        default=None,
        description="package.module:function called as function(trial, data) per trial; returns a fitted "
        "model (modelloop.training.objective).",
    )
    task: Literal["classification", "regression"] | None = Field(
        default=None,
        description="Needed with objective, and with a class scikit-learn cannot tell the task of.",
    )
    params: dict[str, Any] = Field(default_factory=dict, description="Fixed estimator parameters.")
    search_space: dict[str, Distribution] | None = Field(
        default=None,
        description="Hyperparameter -> distribution; default: the family's own space (a class needs one; "
        "{} tunes nothing).",
    )
    preprocess: Literal["pipeline", "none"] = Field(
        default="pipeline",
        description="With class: pipeline (categories one-hot encoded, numbers passed through) or none (the "
        "bare estimator gets the rows as they are, and is logged with its own MLflow flavour).",
    )
    serialization: Literal["skops", "pickle"] = Field(
        default="skops",
        description="With class or objective: skops (loads only the types in trusted_types) or pickle (loads "
        "any code; recorded as the version tag modelloop.serialization).",
    )
    trusted_types: list[str] = Field(
        default_factory=list,
        description="With class or objective and skops: the types (beyond skops' defaults) loading the "
        "model may create, each reviewed, e.g. lightgbm.sklearn.LGBMClassifier.",
    )
    code_paths: list[Path] = Field(
        default_factory=list,
        description="Folders or modules of your code (relative to the config file): put on the import path "
        "for class and objective, and logged with the model (MLflow code_paths).",
    )

    @model_validator(mode="after")
    def _one_kind(self) -> EstimatorConfig:
        given = [k for k in ("family", "class_", "objective") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of family, class or objective")
        if self.family is not None:
            for name, default in (
                ("preprocess", "pipeline"),
                ("serialization", "skops"),
                ("trusted_types", []),
                ("code_paths", []),
            ):
                if getattr(self, name) != default:
                    raise _FieldError(name, "is only used with class or objective")
        if self.objective is not None:
            if self.task is None:
                raise _FieldError("task", "objective needs task: classification or regression")
            for name in ("params", "search_space"):
                if getattr(self, name):
                    raise _FieldError(name, "is not used with objective (the function suggests its own)")
            if self.preprocess != "pipeline":
                raise _FieldError("preprocess", "is not used with objective (the function builds the model)")
        if self.serialization == "pickle" and self.trusted_types:
            raise _FieldError("trusted_types", "is only used with serialization skops")
        return self

    @property
    def kind(self) -> Literal["family", "class", "objective"]:
        return "family" if self.family is not None else "class" if self.class_ is not None else "objective"

    @property
    def label(self) -> str:
        """What is tuned, as logged: the family, the class's import path or the objective's."""
        return self.family or self.class_ or self.objective or ""


class DistillConfig(_Strict):
    """A lighter student trained on the registered teacher's soft labels (`training.distill`)."""

    student: EstimatorConfig = Field(
        description="The student: a family or a class with fixed params (no search, no objective)."
    )
    on: Literal["train", "train+unlabelled"] = Field(
        default="train",
        description="Rows the teacher labels for the student: the training rows, or those and `unlabelled`.",
    )
    unlabelled: DatasetConfig | None = Field(
        default=None, description="Rows without (or with an ignored) target, used with on: train+unlabelled."
    )
    temperature: float = Field(
        default=1.0, gt=0, description="Softens the teacher's class probabilities (classification)."
    )
    max_quality_gap: float = Field(
        default=0.01,
        ge=0,
        description="The student passes its gate trailing the teacher by at most this on the test rows.",
    )
    model_name: str | None = Field(
        default=None, description="Registered model name of the student (default: <model_name>-student)."
    )

    @model_validator(mode="before")
    @classmethod
    def _yaml_on(cls, data: Any) -> Any:
        # YAML 1.1 (PyYAML) reads the bare key `on` as the boolean true
        if isinstance(data, dict) and True in data and "on" not in data:
            data = {("on" if k is True else k): v for k, v in data.items()}
        return data

    @model_validator(mode="after")
    def _rows(self) -> DistillConfig:
        if self.on == "train+unlabelled" and self.unlabelled is None:
            raise _FieldError("unlabelled", "on: train+unlabelled needs unlabelled (a dataset)")
        if self.on == "train" and self.unlabelled is not None:
            raise _FieldError("unlabelled", "is only used with on: train+unlabelled")
        if self.student.objective is not None:
            raise _FieldError("student.objective", "a student is a family or a class")
        if self.student.search_space:
            raise _FieldError("student.search_space", "a student is not tuned; give fixed params")
        return self


class MetricConfig(_Strict):
    name: str = Field(description="The metric the study optimises and the gate compares.")
    direction: Literal["maximize", "minimize"] | None = Field(
        default=None, description="Defaults to the metric's natural direction."
    )


class StudyConfig(_Strict):
    """The Optuna study: budget, parallelism, storage and name."""

    n_trials: int | None = Field(default=20, ge=1, description="Trials the study holds when done.")
    timeout: float | None = Field(default=None, gt=0, description="Seconds this process tunes at most.")
    n_jobs: int = Field(default=1, ge=1, description="Parallel trials in this process (threads).")
    workers: int = Field(
        default=1,
        ge=1,
        le=256,
        description="Worker processes tuning the study at once (locally: processes on a journal file or the "
        "configured storage; on Kubernetes: the tuning Job's pods on the chart's PostgreSQL).",
    )
    storage: str | None = Field(
        default=None,
        description="Optuna storage URL: none (in memory), journal:///file.log or sqlite:///file.db (workers "
        "on one machine), or a PostgreSQL URL shared by several workers.",
    )
    name: str | None = Field(default=None, description="Study name (default: the model name); resumable.")
    pruner: Literal["median", "none"] = Field(
        default="median", description="Median pruning for estimators that report intermediate scores."
    )

    @model_validator(mode="after")
    def _budget(self) -> StudyConfig:
        if self.n_trials is None and self.timeout is None:
            raise ValueError("give n_trials, timeout or both")
        if (
            self.storage is not None
            and not self.storage.split(":", 1)[0].startswith(("sqlite", "postgresql", "mysql"))
            and not self.storage.startswith("journal:///")
        ):
            raise _FieldError("storage", "must be a journal:///, sqlite:/// or postgresql:// URL")
        return self


class BaselineConfig(_Strict):
    name: Literal["dummy", "decision_stump", "linear"] = Field(
        default="dummy", description="dummy (Dummy* estimator), or a named heuristic."
    )
    strategy: str | None = Field(
        default=None, description="Dummy strategy (default: prior for classifiers, mean for regressors)."
    )


class PromotionConfig(_Strict):
    policy: Literal["manual", "auto"] = Field(
        default="manual", description="manual: a person moves the alias; auto: the gate moves it."
    )
    alias: str | None = Field(
        default=None,
        description="With auto: the alias a passing version gets (default: challenger if a production "
        "version exists, else production).",
    )
    min_improvement_over_baseline: float = Field(
        default=0.0, ge=0.0, description="The model must beat the baseline by more than this."
    )
    max_regression_vs_production: float = Field(
        default=0.0, ge=0.0, description="The model may trail the production version by at most this."
    )

    @model_validator(mode="after")
    def _alias(self) -> PromotionConfig:
        if self.alias is not None and self.policy != "auto":
            raise _FieldError("alias", "is only used with policy auto")
        return self


class TrainingConfig(_Strict):
    """A whole training: data, split, estimator, metric, study, baseline, registry and promotion."""

    model_name: str = Field(min_length=1, description="Registered model name.")
    experiment: str | None = Field(default=None, description="MLflow experiment (default: the model name).")
    dataset: DatasetConfig
    target: str = Field(default="target", min_length=1, description="The target column.")
    split: SplitConfig = Field(default_factory=SplitConfig)
    estimator: EstimatorConfig
    metric: MetricConfig
    study: StudyConfig = Field(default_factory=StudyConfig)
    baseline: BaselineConfig = Field(default_factory=BaselineConfig)
    promotion: PromotionConfig = Field(default_factory=PromotionConfig)
    seed: int = Field(default=0, description="Seeds the split, the sampler and the estimators.")
    distill: DistillConfig | None = Field(
        default=None, description="Also train a lighter student on the registered model's soft labels."
    )

    @field_validator("model_name")
    @classmethod
    def _registrable(cls, name: str) -> str:
        # what MLflow's registry refuses, found before any tuning rather than at registration
        if not name.strip() or name != name.strip():
            raise ValueError("must not be blank or start or end with spaces")
        if "/" in name or ":" in name or name in {".", ".."}:
            raise ValueError("a registered model name cannot contain '/' or ':'")
        return name

    @model_validator(mode="after")
    def _consistent(self) -> TrainingConfig:
        if self.estimator.class_ is not None and self.estimator.search_space is None:
            raise _FieldError("estimator.search_space", "a class needs a search_space ({} tunes nothing)")
        task = _estimator_task(self.estimator, "estimator")
        if self.distill is not None:
            student = _estimator_task(self.distill.student, "distill.student")
            if student != task:
                raise _FieldError(
                    "distill.student", f"the model is a {task} estimator, the student a {student}"
                )
            if self.distill.model_name == self.model_name:
                raise _FieldError("distill.model_name", "must differ from model_name")
        if self.metric.name not in METRICS:
            raise _FieldError(
                "metric.name", f"unknown metric {self.metric.name!r}; choose one of {', '.join(METRICS)}"
            )
        if metric_task(self.metric.name) != task:
            raise _FieldError(
                "metric.name",
                f"{self.metric.name} is a {metric_task(self.metric.name)} metric, "
                f"but {self.estimator.label} is a {task} estimator",
            )
        natural = metric_direction(self.metric.name)
        if self.metric.direction is not None and self.metric.direction != natural:
            raise _FieldError(
                "metric.direction", f"{self.metric.name} is to {natural}, not {self.metric.direction}"
            )
        if self.split.kind == "stratified" and task != "classification":
            raise _FieldError("split.kind", "a stratified split needs a classification estimator")
        return self

    @property
    def task(self) -> Literal["classification", "regression"]:
        est = self.estimator
        if est.family is not None:
            return family_task(est.family)
        found = est.task or (class_task(est.class_) if est.class_ is not None else None)
        assert found is not None  # validated
        return found

    @property
    def direction(self) -> Literal["maximize", "minimize"]:
        return metric_direction(self.metric.name)

    @property
    def study_name(self) -> str:
        return self.study.name or self.model_name

    @property
    def experiment_name(self) -> str:
        return self.experiment or self.model_name


def _estimator_task(est: EstimatorConfig, at: str) -> Literal["classification", "regression"]:
    """Check an estimator (family, class or objective) at config path `at`; return its task."""
    add_code_paths(est.code_paths)
    if est.family is not None:
        if est.family not in FAMILIES:
            raise _FieldError(
                f"{at}.family",
                f"unknown estimator {est.family!r}; choose one of {', '.join(sorted(FAMILIES))}",
            )
        if est.task is not None and est.task != family_task(est.family):
            raise _FieldError(f"{at}.task", f"{est.family} is a {family_task(est.family)} estimator")
        problem = check_search_space(est.family, est.params, est.search_space)
        if problem is not None:
            raise _FieldError(f"{at}.{problem[0]}", problem[1])
        return family_task(est.family)
    if est.objective is not None:
        try:
            import_function(est.objective)
        except ImportPathError as exc:
            raise _FieldError(f"{at}.objective", str(exc)) from None
        assert est.task is not None  # EstimatorConfig requires it
        return est.task
    assert est.class_ is not None
    try:
        problem = check_class(est.class_, est.params, est.search_space)
    except ImportPathError as exc:
        raise _FieldError(f"{at}.class", str(exc)) from None
    if problem is not None:
        raise _FieldError(f"{at}.{problem[0]}", problem[1])
    found = class_task(est.class_)
    if est.task is None and found is None:
        raise _FieldError(f"{at}.task", f"{est.class_} is neither a classifier nor a regressor; give task")
    if est.task is not None and found is not None and est.task != found:
        raise _FieldError(f"{at}.task", f"{est.class_} is a {found} estimator")
    return est.task or found  # type: ignore[return-value]


def parse_overrides(overrides: list[str] | tuple[str, ...]) -> list[tuple[list[str], Any]]:
    """Parse `key.path=value` strings; values are YAML scalars (`3` is an int, `true` a bool)."""
    parsed: list[tuple[list[str], Any]] = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        keys = key.strip().split(".")
        if not sep or not all(keys):
            raise ConfigError(f"--set {key.strip() or item!r}: expected key.path=value")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            raise ConfigError(f"--set {key}: the value is not a YAML scalar") from None
        parsed.append((keys, value))
    return parsed


def apply_overrides(data: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Return `data` with each `key.path=value` override set (intermediate mappings are created)."""
    for keys, value in parse_overrides(overrides):
        node: dict[str, Any] = data
        for depth, key in enumerate(keys[:-1]):
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {'.'.join(keys)}: {'.'.join(keys[: depth + 1])} is not a mapping")
            node = child
        node[keys[-1]] = value
    return data


def _describe(error: dict[str, Any]) -> str:
    loc = [str(p) for p in error.get("loc", ())]
    # a search-space entry's location holds the union tag after the hyperparameter: drop it
    if loc[:2] == ["estimator", "search_space"] and len(loc) >= 4 and loc[3] in _UNION_TAGS:
        del loc[3]
    path = ".".join(loc) or "config"
    ctx = error.get("ctx") or {}
    inner = ctx.get("error")
    if isinstance(inner, _FieldError):
        return f"{'.'.join([*loc, inner.path])}: {inner.message}"
    message = str(error.get("msg", "invalid value"))
    kind = error.get("type")
    if kind == "extra_forbidden":
        message = "unknown field"
    elif kind == "union_tag_not_found":
        message = "give type: float, int or categorical"
    elif kind == "union_tag_invalid":
        message = "type must be float, int or categorical"
    elif message.startswith("Value error, "):
        message = message.removeprefix("Value error, ")
    return f"{path}: {message}"


def validate_config(data: Any, *, source: str = "config") -> TrainingConfig:
    """Validate a parsed config mapping; raises ConfigError naming the first bad field."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the config must be a YAML mapping")
    try:
        return TrainingConfig.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        first = _describe(dict(errors[0]))
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        raise ConfigError(f"{source}: {first}{more}") from None


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> TrainingConfig:
    """Read a training config YAML file, apply `--set key.path=value` overrides, and validate it.

    Relative dataset and code paths are resolved against the config file's folder."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read training config {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{where}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the config must be a YAML mapping")
    dataset = data.get("dataset")
    if isinstance(dataset, dict) and isinstance(dataset.get("path"), str):
        # a path written in the file is relative to the file; one given with --set, to the working folder
        dataset["path"] = str((path.parent / dataset["path"]).resolve())
    distill = data.get("distill")
    unlabelled = distill.get("unlabelled") if isinstance(distill, dict) else None
    if isinstance(unlabelled, dict) and isinstance(unlabelled.get("path"), str):
        unlabelled["path"] = str((path.parent / unlabelled["path"]).resolve())
    estimator = data.get("estimator")
    if isinstance(estimator, dict) and isinstance(estimator.get("code_paths"), list):
        # so are the code paths written in it
        estimator["code_paths"] = [
            str((path.parent / p).resolve()) if isinstance(p, str) else p for p in estimator["code_paths"]
        ]
    data = apply_overrides(data, overrides)
    config = validate_config(data, source=str(path))
    if config.dataset.path is not None and not config.dataset.path.is_absolute():
        config = config.model_copy(
            update={"dataset": config.dataset.model_copy(update={"path": config.dataset.path.resolve()})}
        )
    return config


def dump_config(config: TrainingConfig) -> str:
    """The resolved config as YAML (what the training run records)."""
    return yaml.safe_dump(config.model_dump(mode="json", exclude_none=True, by_alias=True), sort_keys=False)


__all__ = [
    "BaselineConfig",
    "DatasetConfig",
    "DistillConfig",
    "EstimatorConfig",
    "MetricConfig",
    "PromotionConfig",
    "SplitConfig",
    "StudyConfig",
    "TrainingConfig",
    "apply_overrides",
    "dump_config",
    "load_config",
    "parse_overrides",
    "validate_config",
]
