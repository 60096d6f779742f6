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
from modelloop.contract.errors import ConfigError
from modelloop.contract.logs import configure_logging

_PATH = click.Path(path_type=Path)
#: 3 attempts, 8 s each at most: a silent MLflow is reported in under 30 s, a closed port in about 3 s
SERVE_BOUNDS = MlflowBounds(retries=2, backoff_factor=1, timeout=8)

log = logging.getLogger(__name__)


@click.command()
@click.option(
    "--model", "models", multiple=True, help="Model to host: NAME@ALIAS or NAME/VERSION (repeatable)."
)
@click.option("--challenger", help="Challenger version of one hosted model: NAME/VERSION or NAME@ALIAS.")
@click.option(
    "--challenger-mode", type=click.Choice(["shadow", "canary"]), help="Shadow (default) or canary."
)
@click.option("--canary-share", type=float, help="Share of requests a canary answers (default 0.1).")
@click.option("--host", help="Address to bind (default 127.0.0.1).")
@click.option("--port", type=int, help="gRPC port (0: pick a free one; default 8081).")
@click.option("--port-file", type=_PATH, help='Write {"grpc": port, "metrics": port} here once ready.')
@click.option("--metrics-port", type=int, help="Prometheus metrics port (0: pick a free one).")
@click.option("--tracking-uri", help="MLflow tracking URI (the registry is on the same server).")
@click.option("--prediction-log-url", help="SQLAlchemy URL of the prediction log, or 'none' to turn it off.")
@click.option("--token-file", type=_PATH, help="File with the bearer token callers must send.")
@click.option(
    "--admin-token-file",
    type=_PATH,
    help="File with the admin service's own token (hot swap); without it the admin service is off.",
)
@click.option("--max-batch-size", type=int, help="Most rows in one predict call (default 64).")
@click.option("--max-batch-wait-ms", type=float, help="Longest wait for a batch to fill (default 20 ms).")
@click.option(
    "--max-batch-idle-ms",
    type=float,
    help="Close a batch early after this long without a request (default 2 ms).",
)
@click.option("--reflection/--no-reflection", default=None, help="gRPC server reflection (default off).")
@click.option(
    "--unseen-categories", type=click.Choice(["reject", "pass"]), help="Unseen categories: reject or pass."
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    help="Server processes on the one port (default: the CPUs this process may use, from its affinity and "
    "cgroup quota); 1: a single process.",
)
@click.option("--grace-period", type=float, help="Seconds in-flight calls get on SIGTERM (default 30).")
@click.option(
    "--wait-for-registry/--no-wait-for-registry",
    default=None,
    help="When MLflow cannot be reached at start, keep trying with backoff (health NOT_SERVING) instead of "
    "exiting (env MODELLOOP_WAIT_FOR_REGISTRY).",
)
@click.option("--tls-cert-file", type=_PATH, help="PEM certificate chain: serve over TLS.")
@click.option("--tls-key-file", type=_PATH, help="PEM private key of the certificate.")
@click.option("--tls-client-ca-file", type=_PATH, help="PEM CA bundle: require client certificates (mTLS).")
@click.option("--log-level", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]), help="Log level.")
@click.option(
    "--log-format", type=click.Choice(["text", "json"]), help="Plain text or one JSON object a line."
)
@reports_errors(mlflow=SERVE_BOUNDS)
def serve(models: tuple[str, ...], **flags: Any) -> None:
    """Run the gRPC scoring server (Open Inference Protocol v2) for models from the MLflow registry."""
    from modelloop.serving.settings import ServeSettings
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
