"""Settings of the monitoring processes (`modelloop monitor`, `modelloop feedback`), parsed once at the entry.

Extends `CommonSettings` (prefix `MODELLOOP_`); flags override the environment.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from modelloop.contract.settings import CommonSettings


class MonitorSettings(CommonSettings):
    """What the monitoring job reads."""

    monitor_config: Path | None = Field(
        default=None, description="YAML file of drift rules and retraining policies (defaults + per model)."
    )
    retrain: bool = Field(default=True, description="Launch retrainings when a policy fires.")
    retrain_dir: Path | None = Field(
        default=None, description="Where retraining configs and logs go (default: <data_dir>/retraining)."
    )
    retrain_job_template: Path | None = Field(
        default=None,
        description="Kubernetes Job template (YAML): retrainings run as Jobs; unset: as a local subprocess.",
    )
    retrain_namespace: str | None = Field(
        default=None, description="Namespace of the retraining Jobs (default: the template's namespace)."
    )
    memory_budget_mb: int = Field(
        default=512,
        ge=16,
        description="Memory for a window's feature values; wider windows take more passes.",
    )

    def resolved_retrain_dir(self) -> Path:
        return self.retrain_dir or self.data_dir / "retraining"


__all__ = ["MonitorSettings"]
