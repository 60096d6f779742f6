"""Typed settings shared by every process, parsed once at the entry point.

Each entry point (the CLI commands) builds one settings object from the environment (prefix `MODELLOOP_`)
and its flags, and passes it down; nothing below reads `os.environ`. Parts extend `CommonSettings` with
their own fields in their own modules (e.g. the scoring server's settings live in `serving`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class CommonSettings(BaseSettings):
    """Settings every modelloop process reads."""

    model_config = SettingsConfigDict(env_prefix="MODELLOOP_", extra="ignore", frozen=True)

    tracking_uri: str = Field(
        default="http://127.0.0.1:5000",
        description="MLflow tracking server URI (the registry is on the same server).",
    )
    data_dir: Path = Field(
        default=Path(".modelloop"),
        description="Local state: the MLflow SQLite file and artifacts, logs, the prediction log.",
    )
    prediction_log_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the prediction log (SQLite or PostgreSQL); defaults to a SQLite file "
        "in data_dir.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(default="INFO", description="Log level.")
    log_format: Literal["text", "json"] = Field(
        default="text", description="Plain text or one JSON object a line."
    )

    def resolved_prediction_log_url(self) -> str:
        """The prediction-log URL, defaulting to `<data_dir>/predictions.db`."""
        if self.prediction_log_url:
            return self.prediction_log_url
        return f"sqlite:///{(self.data_dir / 'predictions.db').resolve()}"


__all__ = ["CommonSettings"]
