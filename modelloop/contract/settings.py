"""Typed settings shared by every process, parsed once at the entry point.

Each entry point (the CLI commands) builds one settings object from the environment (prefix `MODELLOOP_`)
and its flags, and passes it down; nothing below reads `os.environ`. Parts extend `CommonSettings` with
their own fields in their own modules (e.g. the scoring server's settings live in `serving`).

The MLflow tracking URI follows MLflow's own convention below modelloop's: the `--tracking-uri` flag, else
`MODELLOOP_TRACKING_URI`, else `MLFLOW_TRACKING_URI` (what every MLflow user sets), else
`DEFAULT_TRACKING_URI`; an empty variable counts as unset, as MLflow counts it. MLflow's other client
variables (`MLFLOW_TRACKING_USERNAME`/`_PASSWORD`, `MLFLOW_TRACKING_TOKEN`, `MLFLOW_TRACKING_INSECURE_TLS`,
`MLFLOW_TRACKING_SERVER_CERT_PATH`, `MLFLOW_TRACKING_CLIENT_CERT_PATH`, ...) are not settings here: MLflow's
client reads them itself on every request, whatever URI it is given, and child processes inherit them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

#: where the tracking URI points when nothing names one (`modelloop up` serves MLflow there)
DEFAULT_TRACKING_URI = "http://127.0.0.1:5000"
#: MLflow's own variable for the tracking URI, honoured below `MODELLOOP_TRACKING_URI`
MLFLOW_TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"


class _ModelloopEnv(EnvSettingsSource):
    """The `MODELLOOP_*` variables, where an empty `MODELLOOP_TRACKING_URI` counts as unset (so that
    `MLFLOW_TRACKING_URI` or the default applies, as MLflow treats an empty `MLFLOW_TRACKING_URI`)."""

    def __call__(self) -> dict[str, Any]:
        values = super().__call__()
        if "tracking_uri" in values and not str(values["tracking_uri"] or "").strip():
            del values["tracking_uri"]
        return values


class _MlflowTrackingUri(PydanticBaseSettingsSource):
    """`MLFLOW_TRACKING_URI` as the tracking URI: the lowest source, above only the field's default."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        uri = os.environ.get(MLFLOW_TRACKING_URI_ENV, "").strip()
        return {"tracking_uri": uri} if uri else {}


class CommonSettings(BaseSettings):
    """Settings every modelloop process reads."""

    model_config = SettingsConfigDict(env_prefix="MODELLOOP_", extra="ignore", frozen=True)

    tracking_uri: str = Field(
        default=DEFAULT_TRACKING_URI,
        description="MLflow tracking server URI (the registry is on the same server): the flag, else "
        "MODELLOOP_TRACKING_URI, else MLflow's MLFLOW_TRACKING_URI, else http://127.0.0.1:5000.",
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

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Highest first: keyword arguments (the flags), `MODELLOOP_*`, dotenv and secrets files, then
        `MLFLOW_TRACKING_URI` for the tracking URI; the field defaults below all of them."""
        return (
            init_settings,
            _ModelloopEnv(settings_cls),
            dotenv_settings,
            file_secret_settings,
            _MlflowTrackingUri(settings_cls),
        )


__all__ = ["DEFAULT_TRACKING_URI", "MLFLOW_TRACKING_URI_ENV", "CommonSettings"]
