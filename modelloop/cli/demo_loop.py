"""The demo scenario: the whole loop on the local platform, step by step, each step checked.

Used by `modelloop demo` (default sizes) and by its integration test (small sizes). The steps:

1. start the local platform (MLflow, controller with the local target and its webhook, monitoring schedule);
2. train a classifier on breast cancer with Optuna (baseline beside it) and register version 1;
3. promote version 1 by setting the `production` alias through the MLflow API, as the UI does
   (`MlflowModelRegistry.set_alias`);
4. the controller deploys it; a traffic generator calls it over gRPC and reports labels afterwards;
5. at a window boundary the traffic shifts (`demo_data`: nine size features x1.3);
6. monitoring flags the drift and, after `drift_windows` drifted windows, launches a retraining on the
   training table, which now holds the shifted rows it has labels for;
7. version 2 passes the gate, is promoted by the auto policy the demo gives retrainings, and is hot-swapped
   while traffic flows; not one call may fail.
Each step records whether it happened; the caller prints the tables from MLflow and exits non-zero if a
step did not happen.
"""

from __future__ import annotations

import logging
import math
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from modelloop.adapters.mlflow_registry import MlflowModelRegistry
from modelloop.adapters.mlflow_ui import registry_url
from modelloop.cli.demo_data import SHIFT_FACTOR, TARGET, DemoData, TrainingTable, shifted_features, traffic
from modelloop.cli.local_monitoring import LocalMonitoring, describe_outcome, platform_monitoring
from modelloop.cli.platform import LocalPlatform, PlatformSettings
from modelloop.cli.traffic import Labelled, TrafficGenerator, TrafficStats
from modelloop.contract.errors import ModelloopError
from modelloop.contract.model_registry import VersionInfo
from modelloop.contract.registry import PRODUCTION_ALIAS, TAG_GATE, TAG_GATE_REASONS, TAG_TRIGGERED_BY

if TYPE_CHECKING:
    from modelloop.monitoring.job import WindowOutcome

log = logging.getLogger(__name__)

MODEL = "demo-breast-cancer"
BINDING = "demo"
RETRAIN_OVERRIDES = ("--set", "promotion.policy=auto", "--set", f"promotion.alias={PRODUCTION_ALIAS}")


@dataclass(frozen=True)
class DemoSizes:
    """How big and how long: the defaults fit in a few minutes on two cores; tests use smaller ones."""

    trials: int = 10
    window: float = 12.0  # seconds per monitoring window
    rate: float = 15.0  # calls a second
    calm_windows: int = 2  # windows measured before the shift
    drift_windows: int = 2  # drifted windows in a row that launch the retraining
    after_swap: float = 8.0  # seconds of traffic once version 2 answers
    step_timeout: float = 240.0


@dataclass
class Step:
    title: str
    ok: bool | None = None  # None: not reached
    detail: str = ""
    seconds: float = 0.0


@dataclass
class DemoResult:
    steps: list[Step]
    tracking_uri: str
    stats: TrafficStats
    versions: dict[str, str] = field(default_factory=dict)  # "v1"/"v2" -> version number

    @property
    def ok(self) -> bool:
        return all(step.ok for step in self.steps)


class StepFailedError(ModelloopError):
    """A demo step did not happen."""


def training_config(table: Path, trials: int) -> dict[str, Any]:
    """The team's training config: HistGradientBoosting on the training table, tuned for ROC AUC."""
    return {
        "model_name": MODEL,
        "dataset": {"path": str(table)},
        "target": TARGET,
        "split": {"kind": "stratified", "test_size": 0.25},
        "estimator": {
            "family": "hist_gradient_boosting_classifier",
            "search_space": {
                "learning_rate": {"type": "float", "low": 0.05, "high": 0.5, "log": True},
                "max_iter": {"type": "int", "low": 10, "high": 40},
                "max_leaf_nodes": {"type": "int", "low": 4, "high": 16},
            },
        },
        "metric": {"name": "roc_auc"},
        "study": {"n_trials": trials},
        "baseline": {"name": "dummy"},
        "promotion": {"policy": "manual"},
        "seed": 7,
    }


def monitoring_config(sizes: DemoSizes) -> dict[str, Any]:
    """The demo model's monitoring rules: 9 of 30 features shift, so a quarter of them makes a window
    drifted; windows are small, so the KS / chi-square tests decide (p < 0.05)."""
    share = 0.25
    return {
        "models": {
            MODEL: {
                "drift": {"drift_share": share, "min_rows": 30},
                "retrain": {
                    "drift_share": share,
                    "consecutive_windows": sizes.drift_windows,
                    "min_rows": max(30, int(sizes.window * sizes.rate * 0.5)),
                    "cooldown_seconds": 3600,
                },
            }
        }
    }


class DemoLoop:
    """Runs the steps (module docstring) on a platform in `data_dir`; `say` prints progress."""

    def __init__(
        self,
        data_dir: Path,
        sizes: DemoSizes,
        *,
        say: Callable[[str], None],
        mlflow_port: int = 0,
    ) -> None:
        self.data_dir = data_dir.resolve()
        self.sizes = sizes
        self.say = say
        self.mlflow_port = mlflow_port
        self.steps = [
            Step("start the local platform (MLflow, controller, monitoring)"),
            Step("train with Optuna, baseline beside it, register version 1"),
            Step("promote version 1: set the production alias through the MLflow API"),
            Step("controller deploys version 1; traffic over gRPC"),
            Step("traffic shifts (size features x1.3)"),
            Step("monitoring detects the drift and launches a retraining"),
            Step("version 2 passes the gate, is promoted and hot-swapped, no call fails"),
        ]
        self.platform: LocalPlatform | None = None
        self.monitoring: LocalMonitoring | None = None
        self.traffic: TrafficGenerator | None = None
        self.table: TrainingTable | None = None
        self.versions: dict[str, str] = {}
        self._windows: list[WindowOutcome] = []
        self._windows_changed = threading.Condition()
        self._t0 = time.monotonic()

    # running ----------------------------------------------------------------------------------------------

    def run(self) -> DemoResult:
        """Run every step, stopping at the first that does not happen; the platform keeps running."""
        runners = [
            self._start,
            self._train,
            self._promote,
            self._deploy,
            self._shift,
            self._detect,
            self._swap,
        ]
        for number, (step, runner) in enumerate(zip(self.steps, runners, strict=True), start=1):
            self.say(f"step {number}/{len(self.steps)}: {step.title}")
            started = time.monotonic()
            try:
                step.detail = runner()
                step.ok = True
            except ModelloopError as exc:
                step.ok, step.detail = False, str(exc)
            step.seconds = time.monotonic() - started
            self.say(f"  {'done' if step.ok else 'FAILED'} in {step.seconds:.0f}s: {step.detail}")
            if not step.ok:
                break
        stats = self.traffic.stop() if self.traffic is not None else TrafficStats()
        self.traffic = None
        return DemoResult(self.steps, self.tracking_uri, stats, dict(self.versions))

    def stop(self) -> None:
        if self.traffic is not None:
            self.traffic.stop()
            self.traffic = None
        if self.platform is not None:
            self.platform.stop()
            self.platform = None

    @property
    def tracking_uri(self) -> str:
        return self.platform.tracking_uri if self.platform is not None and self.platform.mlflow else ""

    def _registry(self) -> MlflowModelRegistry:
        return MlflowModelRegistry(self.tracking_uri)

    def _wait(self, what: str, predicate: Callable[[], Any], *, timeout: float | None = None) -> Any:
        deadline = time.monotonic() + (timeout or self.sizes.step_timeout)
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.25)
        raise StepFailedError(f"timed out after {timeout or self.sizes.step_timeout:.0f}s waiting for {what}")

    # steps ------------------------------------------------------------------------------------------------

    def _start(self) -> str:
        from modelloop.deploy.bindings import parse_bindings

        demo_dir = self.data_dir / "demo"
        demo_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "monitoring.yaml").write_text(yaml.safe_dump(monitoring_config(self.sizes)))
        bindings_doc = {"bindings": [{"name": BINDING, "model": MODEL, "target": "local"}]}
        (self.data_dir / "bindings.yaml").write_text(yaml.safe_dump(bindings_doc))
        settings = PlatformSettings(
            data_dir=self.data_dir,
            mlflow_port=self.mlflow_port,
            poll_interval=5.0,
            rollout_deadline=120.0,
            monitor_interval=1.0,
            monitor_window=self.sizes.window,
            monitor_lag=1.5,
        )

        def monitoring(platform: LocalPlatform) -> LocalMonitoring:
            self.monitoring = platform_monitoring(
                platform, settings, retrain_args=RETRAIN_OVERRIDES, on_outcome=self._on_window
            )
            return self.monitoring

        self.platform = LocalPlatform(settings, parse_bindings(bindings_doc), monitor=monitoring).start()
        return f"MLflow UI at {registry_url(self.platform.tracking_uri)}, data in {self.data_dir}"

    def _train(self) -> str:
        from modelloop.training import load_config, run_training
        from modelloop.training.progress import StreamProgress

        data = DemoData.build()
        self.data = data
        self.table = TrainingTable(self.data_dir / "demo" / "training.csv", data.training)
        config_path = self.data_dir / "demo" / "training.yaml"
        config_path.write_text(
            yaml.safe_dump(training_config(self.table.path, self.sizes.trials), sort_keys=False)
        )
        result = run_training(
            load_config(config_path), tracking_uri=self.tracking_uri, progress=StreamProgress(sys.stderr)
        )
        if result.version is None:
            raise StepFailedError("training registered no version")
        self.versions["v1"] = str(result.version)
        if not result.gate_passed:
            raise StepFailedError(f"version {result.version} failed the gate")
        return (
            f"version {result.version}: test roc_auc {result.metrics.get('roc_auc', float('nan')):.3f}, "
            f"baseline {result.baseline_metrics.get('roc_auc', float('nan')):.3f} "
            f"({len(data.training)} rows; config {config_path})"
        )

    def _promote(self) -> str:
        version = self.versions["v1"]
        self._registry().set_alias(MODEL, PRODUCTION_ALIAS, version)
        return f"{MODEL}@{PRODUCTION_ALIAS} -> version {version}"

    def _deploy(self) -> str:
        from modelloop.client import ScoringClient
        from modelloop.contract.predlog import open_prediction_log
        from modelloop.monitoring.feedback import record_feedback

        assert self.platform is not None and self.table is not None
        address = self.platform.wait_for_endpoint(BINDING, timeout=self.sizes.step_timeout)
        client = ScoringClient(address)
        version = self.versions["v1"]
        self._wait(f"version {version} to answer", lambda: _ready(client, MODEL, version))
        store = open_prediction_log(self.platform.prediction_log_url)
        table = self.table

        def on_label(batch: Labelled) -> None:
            record_feedback(store, {request_id: row.label for request_id, row in batch}, model_name=MODEL)
            for _, row in batch:
                table.add(row)
            table.flush()

        self.shifted = threading.Event()
        traffic_started = time.time()
        self.traffic = TrafficGenerator(
            client, MODEL, traffic(self.data, self.shifted), rate=self.sizes.rate, on_label=on_label
        ).start()
        self.say(f"  serving at {address}; traffic {self.sizes.rate:g} calls/s; waiting for calm windows")

        def calm() -> bool:
            done = [
                o
                for o in self._outcomes()
                if o.window.start >= traffic_started and o.status == "ok" and o.version == version
            ]
            return len(done) >= self.sizes.calm_windows

        self._wait(f"{self.sizes.calm_windows} monitoring windows of version {version}", calm)
        assert self.traffic is not None
        stats = self.traffic.stats
        return f"{stats.served} calls served by version {version}, {stats.failed} failed"

    def _shift(self) -> str:
        boundary = math.ceil(time.time() / self.sizes.window) * self.sizes.window
        time.sleep(max(0.0, boundary - time.time()))
        self.shifted.set()
        self.shift_at = boundary
        features = shifted_features(self.data.features)
        shown = ", ".join(features[:3])
        return f"from {_utc(boundary)} UTC: {len(features)} size features x{SHIFT_FACTOR} ({shown}, ...)"

    def _detect(self) -> str:
        def fired() -> WindowOutcome | None:
            for o in self._outcomes():
                if o.window.start >= self.shift_at and o.decision.decision == "fired":
                    return o
            return None

        timeout = (self.sizes.drift_windows + 3) * self.sizes.window + 30
        outcome: WindowOutcome = self._wait("a retraining to be launched", fired, timeout=timeout)
        self.trigger_run = outcome.run_id
        share = outcome.summary.share_drifted if outcome.summary else float("nan")
        return (
            f"window {outcome.window.id}: drifted share {share:.2f}; "
            f"retraining launched by monitoring run {outcome.run_id}"
        )

    def _swap(self) -> str:
        registry = self._registry()
        v1 = int(self.versions["v1"])

        def registered() -> VersionInfo | None:
            newer = [mv for mv in registry.versions(MODEL) if int(mv.version) > v1]
            return newer[0] if newer and TAG_GATE in newer[0].tags else None

        mv: VersionInfo = self._wait("the retrained version to be registered and gated", registered)
        version = mv.version
        self.versions["v2"] = version
        trigger = registry.run(mv.run_id).tags.get(TAG_TRIGGERED_BY) if mv.run_id else None
        if trigger != self.trigger_run:
            raise StepFailedError(f"version {version} is not linked to the monitoring run that triggered it")
        if mv.tags.get(TAG_GATE) != "passed":
            raise StepFailedError(f"version {version} failed the gate: {mv.tags.get(TAG_GATE_REASONS, '?')}")
        self.say(f"  version {version} registered and passed the gate; waiting for the swap")
        self._wait(
            f"the {PRODUCTION_ALIAS} alias to move to version {version}",
            lambda: registry.resolve(MODEL, PRODUCTION_ALIAS) == version,
        )
        assert self.traffic is not None
        traffic = self.traffic
        self._wait(f"version {version} to answer calls", lambda: version in traffic.stats.first_seen)
        time.sleep(self.sizes.after_swap)
        stats = traffic.stats
        if stats.failed:
            raise StepFailedError(f"{stats.failed} of {stats.sent} calls failed ({dict(stats.errors)})")
        return f"version {version} serves; {stats.served} calls served across the swap, none failed"

    # monitoring outcomes ----------------------------------------------------------------------------------

    def _on_window(self, outcome: WindowOutcome) -> None:
        with self._windows_changed:
            self._windows.append(outcome)
        self.say(f"  {describe_outcome(outcome)}")

    def _outcomes(self) -> list[WindowOutcome]:
        with self._windows_changed:
            return list(self._windows)


def _ready(client: Any, model: str, version: str) -> bool:
    try:
        return bool(client.ready(model, version=version))
    except ModelloopError:
        return False


def _utc(ts: float) -> str:
    from modelloop.cli.demo_report import utc

    return utc(ts)


__all__ = [
    "BINDING",
    "MODEL",
    "DemoLoop",
    "DemoResult",
    "DemoSizes",
    "Step",
    "monitoring_config",
    "training_config",
]
