"""Per-model monitoring configuration: the drift decision rules, their thresholds, and the retraining policy.

Read by `monitoring.drift` (rules), `monitoring.trigger` (policy) and the job; loaded from a YAML file by
the `modelloop monitor` command (`load_monitor_config`) or built in Python. A file holds `defaults` and
per-model overrides under `models`, merged key by key:

    defaults:
      drift: {large_window_rows: 1000, wasserstein: 0.1}
      retrain: {consecutive_windows: 3, cooldown_seconds: 86400}
    models:
      churn:
        retrain: {quality_metric: accuracy, quality_floor: 0.8}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from modelloop.contract.config_files import describe_validation_error, read_yaml_mapping
from modelloop.contract.errors import ConfigError


class DriftRules(BaseModel):
    """When a feature drifts, and when the dataset does (defaults follow Evidently's conventions)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    min_rows: int = Field(
        default=30, ge=1, description="Below this many rows the window is insufficient, not drifted."
    )
    large_window_rows: int = Field(
        default=1000,
        ge=1,
        description="Windows with more rows than this use distances (Wasserstein, Jensen-Shannon); "
        "smaller ones use tests (KS, chi-square).",
    )
    wasserstein: float = Field(default=0.1, gt=0, description="Normalised Wasserstein distance that drifts.")
    jensen_shannon: float = Field(default=0.1, gt=0, description="Jensen-Shannon distance that drifts.")
    p_value: float = Field(
        default=0.05, gt=0, lt=1, description="KS / chi-square p-value below which drifts."
    )
    psi_moderate: float = Field(default=0.1, gt=0, description="PSI band: moderate shift from here.")
    psi_major: float = Field(default=0.25, gt=0, description="PSI band: major shift from here.")
    drift_share: float = Field(
        default=0.5, gt=0, le=1, description="Share of drifted features that makes the dataset drifted."
    )


class RetrainPolicy(BaseModel):
    """When persistent drift (or poor quality) launches a retraining."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = Field(default=True, description="Off: windows are measured, nothing is launched.")
    drift_share: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="Share of drifted features that counts a window as drifted (default: the drift rule's).",
    )
    consecutive_windows: int = Field(default=3, ge=1, description="Drifted windows in a row that fire.")
    min_rows: int = Field(
        default=1000, ge=1, description="Windows with fewer rows neither count nor break a streak."
    )
    cooldown_seconds: float = Field(
        default=86400.0, ge=0, description="Least time between two retrainings of one model."
    )
    quality_metric: str | None = Field(
        default=None, description="Quality metric watched against the floor (default: the training metric)."
    )
    quality_floor: float | None = Field(
        default=None, description="Fire when the quality metric falls below this (higher is better)."
    )
    quality_ceiling: float | None = Field(
        default=None,
        description="Fire when the quality metric rises above this (lower is better, e.g. rmse).",
    )
    min_labels: int = Field(default=100, ge=1, description="Labelled rows needed before quality may fire.")


class ModelMonitorConfig(BaseModel):
    """Everything monitoring needs to know about one model."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    drift: DriftRules = Field(default_factory=DriftRules)
    retrain: RetrainPolicy = Field(default_factory=RetrainPolicy)

    @model_validator(mode="after")
    def _bands_ordered(self) -> ModelMonitorConfig:
        if self.drift.psi_major < self.drift.psi_moderate:
            raise ValueError("drift.psi_major must not be below drift.psi_moderate")
        return self


class MonitorConfig(BaseModel):
    """Defaults for every model plus per-model overrides (merged key by key)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    defaults: dict[str, Any] = Field(default_factory=dict)
    models: dict[str, dict[str, Any]] = Field(default_factory=dict)

    def for_model(self, name: str) -> ModelMonitorConfig:
        """The merged configuration of one model; `ConfigError` naming the bad field."""
        merged = _merge(self.defaults, self.models.get(name, {}))
        try:
            return ModelMonitorConfig.model_validate(merged)
        except ValidationError as exc:
            raise ConfigError(
                f"monitoring config for model {name!r}: {describe_validation_error(exc)}"
            ) from None


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def load_monitor_config(path: Path | None) -> MonitorConfig:
    """Load a monitoring config file (YAML); no file means the defaults for every model."""
    if path is None:
        return MonitorConfig()
    raw = read_yaml_mapping(path, what="monitoring config")
    try:
        config = MonitorConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"monitoring config {path}: {describe_validation_error(exc)}") from None
    for name in [None, *config.models]:
        config.for_model(name or "")  # validate every merge now, not mid-run
    return config


__all__ = ["DriftRules", "ModelMonitorConfig", "MonitorConfig", "RetrainPolicy", "load_monitor_config"]
