"""The monitoring job's re-run, carry-over and firing logic on the in-memory ports (no MLflow).

The registry is an `InMemoryModelRegistry` arranged as training leaves it (a version whose training run holds
the reference profile, the training metric, test metrics and the resolved config); the records are an
`InMemoryMonitoringRecords`; the prediction log is a real SQLite file; the retrainer keeps what it was asked.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from modelloop.contract.errors import UnavailableError
from modelloop.contract.memory_registry import InMemoryModelRegistry
from modelloop.contract.model_registry import RunInfo
from modelloop.contract.predlog import (
    LATENCY_COLUMN,
    PREDICTION_COLUMN,
    REQUEST_ID_COLUMN,
    TIME_COLUMN,
    PredictionBatch,
    SqlPredictionLog,
)
from modelloop.contract.profile import build_profile
from modelloop.contract.registry import (
    PARAM_METRIC,
    PARAM_TASK,
    REFERENCE_PROFILE_PATH,
    RESOLVED_CONFIG_PATH,
    TAG_MONITOR_NO_DRIFT_REASON,
    TAG_MONITOR_STATUS,
    TAG_RETRAIN_CAUSE,
    TAG_RETRAIN_DECISION,
    TAG_RETRAIN_FIRED_AT,
    TAG_RETRAIN_LAUNCHED,
    TAG_RETRAIN_MONITORING_RUN,
    TAG_RETRAIN_REPLACED_RUN,
    TAG_RETRAIN_RERUN_DECISION,
    TAG_RETRAIN_STREAK,
    Route,
)
from modelloop.monitoring.config import ModelMonitorConfig, MonitorConfig, RetrainPolicy
from modelloop.monitoring.firing import parse_fired_at
from modelloop.monitoring.job import WindowOutcome, run_pass, run_window
from modelloop.monitoring.memory_records import InMemoryMonitoringRecords
from modelloop.monitoring.records import FAILED, FINISHED, METRIC_EMPTY_BEFORE
from modelloop.monitoring.report import ReportInput
from modelloop.monitoring.retrain import Retrainer, RetrainLaunch, RetrainRequest
from modelloop.monitoring.run_content import FEATURES_TABLE_PATH
from modelloop.monitoring.trigger import Decision
from modelloop.monitoring.window import Window

MODEL = "churn"
T0 = 1_700_000_000.0 - (1_700_000_000.0 % 900)
LENGTH = 900.0
TRAINING_CONFIG = "dataset: churn\ntask: classification\n"
FEATURES = ("tenure", "charges")
#: fires after two drifted windows in a row; windows of 300 rows count
POLICY = ModelMonitorConfig(retrain=RetrainPolicy(consecutive_windows=2, min_rows=200, cooldown_seconds=0))


def window(i: int) -> Window:
    return Window(T0 + i * LENGTH, T0 + (i + 1) * LENGTH)


class RecordingRetrainer(Retrainer):
    """Launches nothing: keeps each request, or fails when told to."""

    def __init__(self, *, fail: bool = False) -> None:
        self.requests: list[RetrainRequest] = []
        self.fail = fail

    def launch(self, request: RetrainRequest) -> RetrainLaunch:
        if self.fail:
            raise UnavailableError("the cluster is away")
        self.requests.append(request)
        return RetrainLaunch(
            description=f"job {len(self.requests)}", details={"job": str(len(self.requests))}
        )


@dataclass
class World:
    registry: InMemoryModelRegistry
    records: InMemoryMonitoringRecords
    store: SqlPredictionLog
    retrainer: RecordingRetrainer
    version: str
    training_run: str

    def traffic(self, i: int, *, shift: float, rows: int = 300, model: str = MODEL) -> None:
        """`rows` requests in window `i`, every feature moved by `shift` standard deviations."""
        rng = np.random.default_rng(100 + i)
        table = pa.table(
            {
                TIME_COLUMN: pa.array(window(i).start + np.sort(rng.uniform(0, LENGTH - 1, rows))),
                REQUEST_ID_COLUMN: pa.array([f"{model}-{i}-{n}" for n in range(rows)]),
                LATENCY_COLUMN: pa.array(np.full(rows, 2.0)),
                PREDICTION_COLUMN: pa.array(rng.integers(0, 2, rows)),
                **{name: pa.array(rng.normal(shift, 1.0, rows)) for name in FEATURES},
            }
        )
        self.store.write(PredictionBatch(model, self.version, Route.CHAMPION, table))

    def run(self, i: int, *, retrain: bool = True, config: ModelMonitorConfig = POLICY) -> WindowOutcome:
        return run_window(
            MODEL,
            window(i),
            store=self.store,
            registry=self.registry,
            records=self.records,
            config=config,
            retrainer=self.retrainer if retrain else None,
        )

    def run_ids(self, i: int) -> list[str]:
        return [run.run_id for run in self.records.window_runs(MODEL, window(i).id)]

    def tags(self, run_id: str) -> dict[str, str]:
        return self.records.run(run_id).tags


@pytest.fixture(autouse=True)
def plain_reports(monkeypatch: pytest.MonkeyPatch) -> None:
    """The report without its plots (drawn by `test_report.py` and the integration tests): these tests are
    about runs and tags, and matplotlib takes most of a window's time."""

    def write(folder: Path, report: ReportInput) -> None:
        (folder / "report.html").write_text(f"{report.model} {report.window_id}: {report.decision}")

    monkeypatch.setattr("modelloop.monitoring.job.write_report", write)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    rng = np.random.default_rng(0)
    reference = pd.DataFrame({name: rng.normal(0.0, 1.0, 2000) for name in FEATURES})
    profile = build_profile(reference, rng.integers(0, 2, 2000), task="classification")
    registry = InMemoryModelRegistry()
    run = RunInfo(
        run_id="training-1",
        experiment_id="0",
        status="FINISHED",
        params={PARAM_METRIC: "accuracy", PARAM_TASK: "classification"},
        metrics={"test.accuracy": 0.91},
    )
    registry.add_run(run)
    registry.put_artifact(run.run_id, REFERENCE_PROFILE_PATH, profile.model_dump_json().encode())
    registry.put_artifact(run.run_id, RESOLVED_CONFIG_PATH, TRAINING_CONFIG.encode())
    version = registry.register(MODEL, run_id=run.run_id)
    store = SqlPredictionLog(f"sqlite:///{tmp_path / 'log.db'}")
    try:
        yield World(registry, InMemoryMonitoringRecords(), store, RecordingRetrainer(), version, run.run_id)
    finally:
        store.close()


def test_rerunning_a_window_replaces_its_run(world: World) -> None:
    world.traffic(0, shift=0.0)
    first = world.run(0)
    second = world.run(0)
    assert second.replaced == [first.run_id] and second.rows == 300
    assert world.run_ids(0) == [second.run_id]
    assert [r.window_id for r in world.records.history(MODEL)] == [window(0).id]
    assert "report.html" in world.records.artifact_paths(second.run_id)


def test_firing_launches_with_the_training_config_and_tags_the_registry(world: World) -> None:
    world.traffic(0, shift=3.0)
    world.traffic(1, shift=3.0)
    assert world.run(0).decision.decision is Decision.NOT_PERSISTENT
    fired = world.run(1)
    assert fired.decision.decision is Decision.FIRED
    # the cause names the window whose run fired; the streak (what "the same cause" means) its first window
    assert fired.decision.cause == f"drift:{world.version}:{window(1).id}"
    assert fired.decision.streak == f"drift:{world.version}:{window(0).id}"
    (request,) = world.retrainer.requests
    assert request.config_text == TRAINING_CONFIG and request.training_run_id == world.training_run
    assert request.monitoring_run_id == fired.run_id and request.tracking_uri == world.records.tracking_uri
    tags = world.tags(fired.run_id)
    assert tags[TAG_RETRAIN_DECISION] == "fired" and tags["modelloop.retrain.job"] == "1"
    assert tags[TAG_RETRAIN_LAUNCHED] == "job 1"
    for where in (world.registry.model_tags(MODEL), world.registry.version(MODEL, world.version).tags):
        assert where[TAG_RETRAIN_CAUSE] == fired.decision.cause
        assert where[TAG_RETRAIN_MONITORING_RUN] == fired.run_id
        assert where[TAG_RETRAIN_STREAK] == fired.decision.streak
        assert where[TAG_RETRAIN_FIRED_AT].endswith("Z")  # ISO-8601 UTC
        assert parse_fired_at(where[TAG_RETRAIN_FIRED_AT]) == window(1).end


def test_rerunning_the_window_that_fired_carries_the_firing_over(world: World) -> None:
    world.traffic(0, shift=3.0)
    world.traffic(1, shift=3.0)
    world.run(0)
    fired = world.run(1)
    rerun = world.run(1)
    assert rerun.decision.decision is Decision.ALREADY_FIRED and rerun.launch is None
    assert len(world.retrainer.requests) == 1
    tags = world.tags(rerun.run_id)
    # the record of the firing stays on the window's run; the re-run says what it decided itself
    assert tags[TAG_RETRAIN_DECISION] == "fired" and tags[TAG_RETRAIN_CAUSE] == fired.decision.cause
    assert tags["modelloop.retrain.job"] == "1" and tags[TAG_RETRAIN_RERUN_DECISION] == "already_fired"
    assert tags[TAG_RETRAIN_REPLACED_RUN] == fired.run_id  # the id the retraining's --triggered-by names
    assert world.registry.model_tags(MODEL)[TAG_RETRAIN_MONITORING_RUN] == rerun.run_id
    assert world.registry.version(MODEL, world.version).tags[TAG_RETRAIN_MONITORING_RUN] == rerun.run_id
    again = world.run(1)
    assert world.tags(again.run_id)[TAG_RETRAIN_REPLACED_RUN] == fired.run_id  # still the first run
    assert world.registry.model_tags(MODEL)[TAG_RETRAIN_MONITORING_RUN] == again.run_id
    assert world.run_ids(1) == [again.run_id]


def test_a_rerun_leaves_the_registry_pointing_at_a_later_firing(world: World) -> None:
    for i, shift in enumerate([3.0, 3.0, 0.0, 3.0, 3.0]):
        world.traffic(i, shift=shift)
    outcomes = [world.run(i) for i in range(5)]
    assert [o.decision.decision for o in outcomes] == [
        Decision.NOT_PERSISTENT,
        Decision.FIRED,
        Decision.NOT_PERSISTENT,
        Decision.NOT_PERSISTENT,
        Decision.FIRED,
    ]
    rerun = world.run(1)
    assert world.tags(rerun.run_id)[TAG_RETRAIN_REPLACED_RUN] == outcomes[1].run_id
    # the registry names the later firing: a re-run of the earlier window does not take it over
    assert world.registry.model_tags(MODEL)[TAG_RETRAIN_MONITORING_RUN] == outcomes[4].run_id
    assert world.registry.version(MODEL, world.version).tags[TAG_RETRAIN_MONITORING_RUN] == outcomes[4].run_id


def test_suppressed_and_failed_launches_record_no_firing(world: World) -> None:
    world.traffic(0, shift=3.0)
    world.traffic(1, shift=3.0)
    world.run(0)
    suppressed = world.run(1, retrain=False)
    assert suppressed.decision.decision is Decision.SUPPRESSED
    assert "retraining is off" in suppressed.decision.detail
    world.retrainer.fail = True
    failed = world.run(1)
    assert (
        failed.decision.decision is Decision.LAUNCH_FAILED and "the cluster is away" in failed.decision.detail
    )
    assert world.tags(failed.run_id)[TAG_RETRAIN_DECISION] == "launch_failed"
    assert TAG_RETRAIN_CAUSE not in world.registry.model_tags(MODEL)
    assert TAG_RETRAIN_CAUSE not in world.registry.version(MODEL, world.version).tags


def test_a_missing_training_config_is_a_launch_failure(world: World, tmp_path: Path) -> None:
    registry = InMemoryModelRegistry()  # the same version, without the resolved config
    registry.add_run(world.registry.run(world.training_run))
    profile = world.registry.read_artifact(world.training_run, REFERENCE_PROFILE_PATH)
    registry.put_artifact(world.training_run, REFERENCE_PROFILE_PATH, profile)
    registry.register(MODEL, run_id=world.training_run)
    world.registry = registry
    world.traffic(0, shift=3.0)
    world.traffic(1, shift=3.0)
    world.run(0)
    outcome = world.run(1)
    assert outcome.decision.decision is Decision.LAUNCH_FAILED and world.retrainer.requests == []


class BrokenUploads(InMemoryMonitoringRecords):
    """Records whose artifact uploads fail once `broken` is set."""

    broken = False

    def log_artifacts(self, run_id: str, folder: Path) -> None:
        if self.broken:
            raise UnavailableError("artifact store away")
        super().log_artifacts(run_id, folder)


def test_a_run_that_fails_midway_is_marked_failed_and_replaces_nothing(world: World) -> None:
    records = world.records = BrokenUploads()
    world.traffic(0, shift=0.0)
    good = world.run(0)
    records.broken = True
    with pytest.raises(UnavailableError, match="artifact store away"):
        world.run(0)
    runs = {r.run_id: r.status for r in records.window_runs(MODEL, window(0).id)}
    (failed,) = set(runs) - {good.run_id}
    assert runs == {good.run_id: FINISHED, failed: FAILED}  # the earlier run stays until a run succeeds
    assert records.run(failed).tags[TAG_MONITOR_STATUS] == "ok"
    assert records.window_recorded(MODEL, window(0).id)


def test_scheduled_pass_skips_finished_windows_retries_failed_ones_and_isolates_failures(
    world: World,
) -> None:
    world.traffic(0, shift=0.0)
    world.traffic(0, shift=0.0, model="ghost")  # traffic for a model the registry does not know
    failed = world.records.start_run(MODEL, window(0).id, {TAG_MONITOR_STATUS: "ok"})
    world.records.finish(failed, failed=True)
    config = MonitorConfig(defaults={"retrain": {"enabled": False}})

    def tick() -> tuple[list[WindowOutcome], list[str], dict[str, str]]:
        result = run_pass(
            [MODEL, "ghost"],
            length=LENGTH,
            store=world.store,
            registry=world.registry,
            records=world.records,
            config=config,
            now=window(0).end + 30,
            skip_recorded=True,
        )
        return result.outcomes, result.skipped, result.failures

    (outcome,), skipped, failures = tick()
    assert outcome.window == window(0) and outcome.replaced == [failed] and skipped == []
    assert list(failures) == ["ghost"] and "is not registered" in failures["ghost"]
    assert world.run_ids(0) == [outcome.run_id]
    assert [r.status for r in world.records.window_runs(MODEL, window(0).id)] == [FINISHED]
    outcomes, skipped, _ = tick()
    assert outcomes == [] and skipped == [MODEL]


def test_an_empty_window_is_not_a_run_and_is_counted_on_the_next_one(world: World) -> None:
    empty = world.run(1)
    assert empty.status == "empty" and empty.run_id == "" and empty.decision.decision is Decision.INSUFFICIENT
    assert world.run_ids(1) == [] and world.records.history(MODEL) == []
    ghost = run_window(
        "never-registered", window(3), store=world.store, registry=world.registry, records=world.records
    )
    assert ghost.status == "empty" and ghost.run_id == ""  # no traffic: the registry is not even asked
    world.traffic(0, shift=0.0)
    world.traffic(4, shift=0.0)
    first, later = world.run(0), world.run(4)
    assert world.records.run(first.run_id).metrics[METRIC_EMPTY_BEFORE] == 0
    # windows 1, 2 and 3 had no traffic: not recorded, counted on the next window's run and in its description
    assert world.records.run(later.run_id).metrics[METRIC_EMPTY_BEFORE] == 3
    assert "3 window(s) without traffic before this one" in world.records.named(later.run_id)[1]


def test_a_window_run_is_named_described_and_keeps_per_feature_statistics_in_a_table(world: World) -> None:
    world.traffic(0, shift=3.0)
    outcome = world.run(0)
    name, description = world.records.named(outcome.run_id)
    start = window(0).iso()[0][11:16]
    assert name.startswith(f"monitor {MODEL} {start}\u2013")
    assert "**Dataset drifted.** 2 of 2 features drifted" in description
    assert "`tenure`" in description and "Retraining:** not_persistent" in description
    metrics = world.records.run(outcome.run_id).metrics
    assert not any(k.startswith(("drift.wasserstein.", "drift.ks_pvalue.", "drift.psi.")) for k in metrics)
    assert len(metrics) < 30 and metrics["drift.share_drifted"] == 1.0
    table = json.loads(world.records.artifact(outcome.run_id, FEATURES_TABLE_PATH))
    rows = [dict(zip(table["columns"], row, strict=True)) for row in table["data"]]
    assert {r["feature"] for r in rows} == {*FEATURES, "(prediction)"}
    tenure = next(r for r in rows if r["feature"] == "tenure")
    assert tenure["drifted"] and tenure["decided_by"] == "ks_pvalue < 0.05" and tenure["value"] < 0.05


def test_a_version_without_a_reference_profile_is_recorded_with_the_reason(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    bare = RunInfo(run_id="own-1", experiment_id="0", status="FINISHED")
    world.registry.add_run(bare)
    version = world.registry.register(MODEL, run_id=bare.run_id)
    rng = np.random.default_rng(1)
    for i in (5, 6):
        table = pa.table(
            {
                TIME_COLUMN: pa.array(window(i).start + np.sort(rng.uniform(0, LENGTH - 1, 100))),
                REQUEST_ID_COLUMN: pa.array([f"own-{i}-{n}" for n in range(100)]),
                LATENCY_COLUMN: pa.array(np.full(100, 2.0)),
                PREDICTION_COLUMN: pa.array(rng.integers(0, 2, 100)),
                **{name: pa.array(rng.normal(0.0, 1.0, 100)) for name in FEATURES},
            }
        )
        world.store.write(PredictionBatch(MODEL, version, Route.CHAMPION, table))
    with caplog.at_level("WARNING", logger="modelloop.monitoring.measure"):
        first, second = world.run(5), world.run(6)
    assert first.status == second.status == "no_reference" and first.summary is None
    tags = world.tags(first.run_id)
    assert tags[TAG_MONITOR_STATUS] == "no_reference"
    reason = tags[TAG_MONITOR_NO_DRIFT_REASON]
    assert f"version {version} has no reference profile" in reason and "modelloop profile" in reason
    assert "Drift not measured." in world.records.named(first.run_id)[1]
    # one log line for the version, not one per window
    assert [r.getMessage() for r in caplog.records].count(f"model {MODEL} version {version}: {reason}") == 1
    assert first.decision.decision is Decision.INSUFFICIENT and world.retrainer.requests == []
