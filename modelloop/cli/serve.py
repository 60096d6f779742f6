"""`modelloop serve`: parse the scoring server's settings once (flags over `MODELLOOP_*` environment), set up
logging, and run the scoring server until SIGTERM (drain, then exit 0): `modelloop.serving.app.run` in this
process with `--workers 1`, else that many worker processes under a supervisor (`modelloop.serving.workers`;
by default one per CPU the process may use).

MLflow's client is bounded by `SERVE_BOUNDS`: against a registry that refuses connections serve fails in a
few seconds, against a silent one in under 30 s (3 attempts of at most 8 s each), unless told to keep
trying (`--wait-for-registry`). A hot swap while MLflow is down fails as fast. After the drain the process
leaves at once, without waiting for a load it abandoned (see `modelloop.serving.app`).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from modelloop.cli.errors import MlflowBounds, reports_errors
from modelloop.cli.options import DURATION_OR_ZERO, log_level_option, option, tracking_uri_option
from modelloop.contract.errors import ConfigError
from modelloop.contract.logs import configure_logging
from modelloop.serving.settings import ServeSettings

_PATH = click.Path(path_type=Path)
#: 3 attempts, 8 s each at most: a silent MLflow is reported in under 30 s, a closed port in about 3 s
SERVE_BOUNDS = MlflowBounds(retries=2, backoff_factor=1, timeout=8)

log = logging.getLogger(__name__)


@click.command(context_settings={"show_default": True})
@option(
    "--model",
    "models",
    multiple=True,
    show_default=False,
    help="Model to host: NAME@ALIAS or NAME/VERSION (repeatable).",
)
@option(
    "--challenger",
    show_default="none",
    help="Challenger version of one hosted model: NAME/VERSION or NAME@ALIAS.",
)
@option(
    "--challenger-mode",
    type=click.Choice(["shadow", "canary"]),
    setting=(ServeSettings, "challenger_mode"),
    help="How the challenger runs.",
)
@option(
    "--canary-share",
    type=float,
    setting=(ServeSettings, "canary_share"),
    help="Share of requests a canary answers.",
)
@option("--host", setting=(ServeSettings, "host"), help="Address to bind.")
@option("--port", type=int, setting=(ServeSettings, "port"), help="gRPC port (0: pick a free one).")
@option(
    "--port-file",
    type=_PATH,
    show_default="none",
    help='Write {"grpc": port, "metrics": port} here once ready.',
)
@option(
    "--metrics-port",
    type=int,
    setting=(ServeSettings, "metrics_port"),
    help="Prometheus metrics port (0: pick a free one).",
)
@tracking_uri_option()
@option(
    "--prediction-log-url",
    show_default="<data-dir>/predictions.db (SQLite)",
    help="SQLAlchemy URL of the prediction log, or 'none' to turn it off.",
)
@option(
    "--token-file",
    type=_PATH,
    show_default="none: no token asked",
    help="File with the bearer token callers must send.",
)
@option(
    "--admin-token-file",
    type=_PATH,
    show_default="none: admin service off",
    help="File with the admin service's own token (hot swap); without it the admin service is off.",
)
@option(
    "--max-batch-size",
    type=int,
    setting=(ServeSettings, "max_batch_size"),
    help="Most rows in one predict call.",
)
@option(
    "--max-batch-wait-ms",
    type=float,
    setting=(ServeSettings, "max_batch_wait_ms"),
    help="Longest wait for a batch to fill, milliseconds.",
)
@option(
    "--max-batch-idle-ms",
    type=float,
    setting=(ServeSettings, "max_batch_idle_ms"),
    help="Close a batch early after this long without a request, milliseconds.",
)
@option(
    "--reflection/--no-reflection", default=None, show_default="no-reflection", help="gRPC server reflection."
)
@option(
    "--unseen-categories",
    type=click.Choice(["reject", "pass"]),
    setting=(ServeSettings, "unseen_categories"),
    help="What to do with a category the model never saw.",
)
@option(
    "--workers",
    type=click.IntRange(min=1),
    show_default="the CPUs this process may use, from its affinity and cgroup quota",
    help="Server processes on the one port; 1: a single process.",
)
@option(
    "--grace-period",
    type=DURATION_OR_ZERO,
    setting=(ServeSettings, "grace_period"),
    help="Time in-flight calls get on SIGTERM.",
)
@option(
    "--wait-for-registry/--no-wait-for-registry",
    default=None,
    show_default="$MODELLOOP_WAIT_FOR_REGISTRY, else no-wait-for-registry",
    help="When MLflow cannot be reached at start, keep trying with backoff (health NOT_SERVING) instead of "
    "exiting.",
)
@option(
    "--tls-cert-file",
    type=_PATH,
    show_default="none: plaintext",
    help="PEM certificate chain: serve over TLS.",
)
@option("--tls-key-file", type=_PATH, show_default="none", help="PEM private key of the certificate.")
@option(
    "--tls-client-ca-file",
    type=_PATH,
    show_default="none: no client certificate asked",
    help="PEM CA bundle: require client certificates (mTLS).",
)
@log_level_option()
@option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    setting=(ServeSettings, "log_format"),
    help="Plain text or one JSON object a line.",
)
@reports_errors(mlflow=SERVE_BOUNDS)
def serve(models: tuple[str, ...], **flags: Any) -> None:
    """Run the gRPC scoring server (Open Inference Protocol v2) for models from the MLflow registry."""
    from modelloop.serving.workers import serve as run_server

    overrides = {k: v for k, v in flags.items() if v is not None}
    if models:
        overrides["models"] = list(models)
    try:
        settings = ServeSettings(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ConfigError(f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}") from None
    configure_logging(settings.log_level, settings.log_format)
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # OpenMP threads spin against each other on small batches
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no progress bars in server logs
    run_server(settings)
    _leave_abandoned_work()


def _leave_abandoned_work() -> None:
    """Exit now if threads the drain abandoned are still running (e.g. MLflow's own download workers stuck on
    a silent server): the interpreter would wait for them, long after "stopped"."""
    lingering = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
    if not lingering:
        return
    log.info("leaving %d abandoned thread(s) behind", len(lingering))
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


__all__ = ["SERVE_BOUNDS", "serve"]
