"""`make docs-shots`: run the demo to the state after a retraining, and take headless Chromium screenshots of
the MLflow UI pages that tell the story, into docs/shots/*.png:

- `version.png`: the page of version 2 (its description: why it exists, the gate table, its rollouts);
- `version-1.png`: the page of version 1 (retired: serving from/until, replaced by version 2);
- `training-run.png`: the training run of version 2 (its name, description and metrics);
- `monitoring-run.png`: the monitoring run whose drift fired the retraining;
- `deployment-run.png`: the deployment run that rolled version 2 out;
- `models.png`: the registered model's versions, in the model-training views.

Each address carries `?workflowType=machine_learning` (`adapters.mlflow_ui`): a fresh browser profile, as a
newcomer's, lands on the model-training views with it. Chromium is the Debian package (`/usr/bin/chromium`,
installed by the Makefile target when absent); each shot uses a fresh profile. Usage:

    python tools/docs_shots.py [--out docs/shots] [--trials 6] [--keep-data]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from modelloop.adapters.mlflow_registry import MlflowModelRegistry
from modelloop.adapters.mlflow_runs import MlflowRuns
from modelloop.adapters.mlflow_ui import model_url, run_url, version_url
from modelloop.cli.demo import fresh_data_dir
from modelloop.cli.demo_loop import MODEL, DemoLoop, DemoSizes
from modelloop.contract.registry import DEPLOYMENTS_EXPERIMENT, TAG_TRIGGERED_BY

CHROMIUM = "/usr/bin/chromium"
#: milliseconds of (virtual) time the UI gets to fetch and render before the shot: it is a React app
RENDER_BUDGET_MS = 20000


def shoot(url: str, path: Path, *, height: int = 1000) -> None:
    """One screenshot of `url` into `path` with a fresh browser profile."""
    with tempfile.TemporaryDirectory(prefix="modelloop-chromium-") as profile:
        done = subprocess.run(
            [
                shutil.which("chromium") or CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                f"--user-data-dir={profile}",
                f"--screenshot={path}",
                f"--window-size=1400,{height}",
                f"--virtual-time-budget={RENDER_BUDGET_MS}",
                url,
            ],
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
    if done.returncode != 0 or not path.exists():
        raise SystemExit(f"error: chromium could not take {path.name} (exit {done.returncode})")
    print(f"  {path}  <- {url}", file=sys.stderr)


def pages(tracking_uri: str) -> dict[str, tuple[str, int]]:
    """The pages to shoot, by file name: (address, window height)."""
    registry = MlflowModelRegistry(tracking_uri)
    v2 = registry.version(MODEL, "2")
    if v2.run_id is None:
        raise SystemExit("error: version 2 has no training run")
    training = registry.run(v2.run_id)
    monitoring_id = v2.tags.get(TAG_TRIGGERED_BY) or training.tags.get(TAG_TRIGGERED_BY)
    if not monitoring_id:
        raise SystemExit("error: version 2 names no monitoring run")
    monitoring = registry.run(monitoring_id)
    rollouts = MlflowRuns(registry).search(DEPLOYMENTS_EXPERIMENT, params={"to_version": "2"})
    shots = {
        "version.png": (version_url(tracking_uri, MODEL, "2"), 1600),
        "version-1.png": (version_url(tracking_uri, MODEL, "1"), 1400),
        "training-run.png": (run_url(tracking_uri, training.experiment_id, training.run_id), 1200),
        "monitoring-run.png": (run_url(tracking_uri, monitoring.experiment_id, monitoring.run_id), 1200),
        "models.png": (model_url(tracking_uri, MODEL), 1000),
    }
    if rollouts:
        shots["deployment-run.png"] = (
            run_url(tracking_uri, rollouts[0].experiment_id, rollouts[0].run_id),
            1000,
        )
    return shots


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/shots"))
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--data-dir", type=Path, default=Path(".modelloop/docs-shots"))
    args = parser.parse_args()
    if not (shutil.which("chromium") or Path(CHROMIUM).exists()):
        print("error: chromium is not installed (make docs-shots installs it)", file=sys.stderr)
        return 2
    started = time.monotonic()

    def say(message: str) -> None:
        print(f"[{time.monotonic() - started:5.0f}s] {message}", file=sys.stderr, flush=True)

    loop = DemoLoop(fresh_data_dir(args.data_dir), DemoSizes(trials=args.trials), say=say)
    try:
        result = loop.run()
        if not result.ok:
            print("error: the demo did not reach the retrained state; no screenshots", file=sys.stderr)
            return 1
        args.out.mkdir(parents=True, exist_ok=True)
        say(f"screenshots of {result.tracking_uri} into {args.out}")
        for name, (url, height) in pages(result.tracking_uri).items():
            shoot(url, args.out / name, height=height)
    finally:
        loop.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
