"""Monitoring as the local platform runs it: every bound model, the last complete window, retraining as a
`modelloop train` subprocess. Wired by `modelloop up` and `modelloop demo` into the platform's schedule.

Each pass measures the last window that closed at least `lag` seconds ago (so the scoring servers' prediction
log has been flushed), and only once (`skip_recorded`): the schedule may tick faster than the window length.
Windows without traffic are not recorded and not reported one by one: `QuietEmpty` lets through the first
of an idle stretch only (the next recorded window's run counts them).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from modelloop.cli.platform import LocalPlatform, PlatformSettings
    from modelloop.contract.model_registry import ModelRegistry
    from modelloop.contract.predlog.store import SqlPredictionLog
    from modelloop.monitoring.config import MonitorConfig
    from modelloop.monitoring.job import WindowOutcome
    from modelloop.monitoring.records import MonitoringRecords
    from modelloop.monitoring.retrain import SubprocessRetrainer

log = logging.getLogger(__name__)


class QuietEmpty:
    """Which window outcomes to report: every recorded one, and of the empty ones (no traffic, not recorded)
    only the first of each idle stretch per model."""

    def __init__(self) -> None:
        self._idle: set[str] = set()

    def worth_saying(self, outcome: WindowOutcome) -> bool:
        if outcome.status != "empty":
            self._idle.discard(outcome.model)
            return True
        if outcome.model in self._idle:
            return False
        self._idle.add(outcome.model)
        return True


def describe_outcome(outcome: WindowOutcome) -> str:
    """One line per measured window, for progress output."""
    if outcome.status == "empty":
        return (
            f"window {outcome.window.id} {outcome.model}: no traffic; windows without traffic are not "
            "recorded (the next window's run counts them)"
        )
    share = "-"
    if outcome.summary is not None and outcome.status == "ok":
        share = f"{outcome.summary.share_drifted:.2f}"
    drifted = sorted(name for name, f in outcome.features.items() if f.drifted)
    shown = ", ".join(drifted[:4]) + (f" (+{len(drifted) - 4})" if len(drifted) > 4 else "")
    return (
        f"window {outcome.window.id} {outcome.model} v{outcome.version or '-'}: {outcome.status}, "
        f"{outcome.rows} rows, drifted share {share}{f' [{shown}]' if drifted else ''}, "
        f"retrain: {outcome.decision.decision}"
    )


class LocalMonitoring:
    """One monitoring pass per call over the models `models()` names then (see the module docstring)."""

    def __init__(
        self,
        models: Callable[[], Sequence[str]],
        *,
        tracking_uri: str,
        prediction_log_url: str,
        window: float,
        lag: float,
        retrain_dir: Path,
        config_file: Path | None = None,
        retrain_args: Sequence[str] = (),
        on_outcome: Callable[[WindowOutcome], None] | None = None,
    ) -> None:
        from modelloop.adapters.mlflow_registry import MlflowModelRegistry
        from modelloop.contract.predlog import open_prediction_log
        from modelloop.monitoring.config import load_monitor_config
        from modelloop.monitoring.mlflow_records import MlflowMonitoringRecords
        from modelloop.monitoring.retrain import SubprocessRetrainer

        self.models = models
        self.window = window
        self.lag = lag
        self.config: MonitorConfig = load_monitor_config(config_file)
        self.registry: ModelRegistry = MlflowModelRegistry(tracking_uri)
        self.records: MonitoringRecords = MlflowMonitoringRecords(tracking_uri)
        self.store: SqlPredictionLog = open_prediction_log(prediction_log_url)
        self.retrainer: SubprocessRetrainer = SubprocessRetrainer(retrain_dir, extra_args=retrain_args)
        self.outcomes: list[WindowOutcome] = []
        self.on_outcome = on_outcome
        self._quiet = QuietEmpty()

    def run_pass(self) -> None:
        from modelloop.monitoring.job import run_pass

        models = list(self.models())
        if not models:
            return
        result = run_pass(
            models,
            length=self.window,
            store=self.store,
            registry=self.registry,
            records=self.records,
            config=self.config,
            retrainer=self.retrainer,
            now=time.time() - self.lag,
            skip_recorded=True,
        )
        for outcome in result.outcomes:
            self.outcomes.append(outcome)
            if not self._quiet.worth_saying(outcome):
                continue
            log.info("%s", describe_outcome(outcome))
            if self.on_outcome is not None:
                self.on_outcome(outcome)
        for name, message in result.failures.items():
            log.warning("monitoring of %s failed: %s", name, message)

    def close(self) -> None:
        self.retrainer.terminate()
        self.store.close()


def platform_monitoring(
    platform: LocalPlatform,
    settings: PlatformSettings,
    *,
    retrain_args: Sequence[str] = (),
    on_outcome: Callable[[WindowOutcome], None] | None = None,
) -> LocalMonitoring:
    """The monitoring of a local platform (`modelloop up`, the demo): its deployed models, tracking server,
    prediction log and data folder, with the window, lag and config of its settings."""
    return LocalMonitoring(
        platform.deployed_models,
        tracking_uri=platform.tracking_uri,
        prediction_log_url=platform.prediction_log_url,
        window=settings.monitor_window,
        lag=settings.monitor_lag,
        retrain_dir=platform.data_dir / "retraining",
        config_file=settings.resolved_monitor_config(),
        retrain_args=retrain_args,
        on_outcome=on_outcome,
    )


__all__ = ["LocalMonitoring", "QuietEmpty", "describe_outcome", "platform_monitoring"]
