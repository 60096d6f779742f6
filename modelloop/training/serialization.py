"""How a trained model is serialised, and which MLflow flavour logs it. Nothing here is trusted silently.

Called by `training.fitting` (right after the registered model is fitted, before anything is logged) and by
`training.model_logging`. A pipeline, or any other scikit-learn object, is logged with the `sklearn` flavour;
a bare LightGBM, XGBoost or CatBoost estimator with the flavour made for it. XGBoost and CatBoost save their
own model format (`native`: no Python object is unpickled when it loads). `sklearn` and `lightgbm` use skops:
loading creates only skops' default types plus the reviewed list (a built-in family's own list from
`training.estimators`; for a class or an objective, `estimator.trusted_types` from the config, which must
name every type the fitted model needs, checked here before anything of the outcome is recorded; MLflow's
lightgbm flavour would trust LightGBM's own types by itself, modelloop asks for them in the config all the
same) — or, only when the config says `serialization: pickle`, pickle, which loads any code. The choice is
recorded on the version as the tag `TAG_SERIALIZATION` (`skops`, `pickle` or `native`).
"""

from __future__ import annotations

from typing import Any, Literal

from modelloop.contract.errors import ConfigError
from modelloop.training.config import TrainingConfig
from modelloop.training.estimators import trusted_types

Flavour = Literal["sklearn", "lightgbm", "xgboost", "catboost"]
Serialization = Literal["skops", "pickle", "native"]
#: Version tag: how the model's file is serialised (skops, pickle or native).
TAG_SERIALIZATION = "modelloop.serialization"
#: Version and run tag: the MLflow flavour the model was logged with.
TAG_FLAVOUR = "modelloop.flavour"
_NATIVE: tuple[Flavour, ...] = ("xgboost", "catboost")


def flavour_of(model: Any) -> Flavour:
    """The MLflow flavour made for the model: a bare LightGBM / XGBoost / CatBoost estimator's own, else
    sklearn (pipelines included)."""
    top = type(model).__module__.split(".", 1)[0]
    return top if top in ("lightgbm", "xgboost", "catboost") else "sklearn"  # type: ignore[return-value]


def serialization_of(config: TrainingConfig, model: Any) -> Serialization:
    flavour = flavour_of(model)
    if flavour in _NATIVE:
        return "native"
    return config.estimator.serialization


def skops_trusted(config: TrainingConfig) -> list[str]:
    """The reviewed types the config lets skops trust: the family's own list, or the configured one."""
    est = config.estimator
    if est.family is not None:
        return trusted_types(est.family)
    return list(est.trusted_types)


def check_trusted(config: TrainingConfig, model: Any) -> None:
    """With skops: a ConfigError naming the types the fitted model needs that the config does not list
    (so a model that could not be loaded is never registered, and nothing is trusted unasked)."""
    if serialization_of(config, model) != "skops":
        return
    import skops.io

    needed = set(skops.io.get_untrusted_types(data=skops.io.dumps(model)))
    missing = sorted(needed - set(skops_trusted(config)))
    if missing:
        raise ConfigError(
            f"estimator.trusted_types: loading the model needs skops to trust {', '.join(missing)}; review "
            "them and list them, or set serialization: pickle"
        )


def version_tags(config: TrainingConfig, model: Any) -> dict[str, str]:
    """What the registered version records about how it is stored."""
    return {TAG_SERIALIZATION: serialization_of(config, model), TAG_FLAVOUR: flavour_of(model)}


__all__ = [
    "TAG_FLAVOUR",
    "TAG_SERIALIZATION",
    "check_trusted",
    "flavour_of",
    "serialization_of",
    "skops_trusted",
    "version_tags",
]
