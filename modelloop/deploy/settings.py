"""Settings of the controller process (`modelloop controller`), parsed once at the entry point.

Extends `CommonSettings` (prefix `MODELLOOP_`); flags override the environment.
"""

from __future__ import annotations

import socket
from pathlib import Path

from pydantic import Field, SecretStr

from modelloop.contract.settings import CommonSettings


class ControllerSettings(CommonSettings):
    """What the deployment controller reads."""

    bindings_file: Path = Field(default=Path("bindings.yaml"), description="The bindings YAML file.")
    webhook_host: str = Field(default="127.0.0.1", description="Address the webhook receiver listens on.")
    webhook_port: int = Field(
        default=8090, ge=0, le=65535, description="Webhook receiver port (0: any free)."
    )
    webhook_secret: SecretStr | None = Field(
        default=None, description="Shared secret of the MLflow webhook; without it no receiver is started."
    )
    poll_interval: float = Field(default=30.0, gt=0, description="Seconds between full reconciles.")
    rollout_deadline: float = Field(
        default=120.0, gt=0, description="Seconds a new version has to become ready before it is rolled back."
    )
    scoring_image: str = Field(
        default="ghcr.io/modelloop/modelloop:latest",
        description="Container image of scoring pods (kubernetes).",
    )
    prediction_log_secret: str | None = Field(
        default=None, description="Secret (key `url`) holding the prediction-log URL for scoring pods."
    )
    scoring_tracking_uri: str | None = Field(
        default=None, description="Tracking URI as seen from scoring pods (default: tracking_uri)."
    )
    scoring_progress_deadline_seconds: int = Field(
        default=300,
        gt=0,
        description="Seconds a scoring Deployment may make no progress before Kubernetes reports "
        "ProgressDeadlineExceeded (its spec.progressDeadlineSeconds; the rollout is then rolled back).",
    )
    scoring_min_ready_seconds: int = Field(
        default=10,
        ge=0,
        description="Seconds a new scoring pod must stay ready before it counts as available "
        "(the Deployment's spec.minReadySeconds).",
    )
    lease_namespace: str = Field(default="default", description="Namespace of the leader-election Lease.")
    lease_name: str = Field(default="modelloop-controller", description="Name of the leader-election Lease.")
    identity: str = Field(
        default_factory=socket.gethostname, description="This replica's identity in the Lease."
    )
    token_file: Path | None = Field(default=None, description="Bearer token file for local scoring servers.")
    local_shared: bool = Field(
        default=False,
        description="Local target: one scoring server process for every binding instead of one per binding.",
    )


__all__ = ["ControllerSettings"]
