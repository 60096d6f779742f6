"""The retraining trigger end to end: real MLflow, a real SQLite prediction log, a real subprocess.

The retrainer runs a small real program in place of `modelloop train` that records the command line and the
config it was handed, so the exact hand-over is checked; `test_train_cli.py` runs the real training CLI.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path

import mlflow
import pytest

from modelloop.contract.predlog import SqlPredictionLog
from modelloop.contract.registry import (
    TAG_QUALITY_BREACHED,
    TAG_RETRAIN_CAUSE,
    TAG_RETRAIN_DECISION,
    TAG_RETRAIN_FIRED_AT,
    TAG_RETRAIN_MONITORING_RUN,
    TAG_RETRAIN_STREAK,
)
from modelloop.monitoring.config import DriftRules, ModelMonitorConfig, RetrainPolicy
from modelloop.monitoring.feedback import record_feedback
from modelloop.monitoring.firing import parse_fired_at
from modelloop.monitoring.job import run_window
from modelloop.monitoring.retrain import SubprocessRetrainer
from modelloop.monitoring.trigger import Decision
from modelloop.monitoring.window import Window
from tests.integration.monitoring.conftest import (
    T0,
    TRAINING_CONFIG,
    WINDOW,
    Monitored,
    ports,
    register_monitored,
    run_ids,
    window_batches,
    write,
)

RECORDER = (
    "import json, pathlib, sys\n"
    "a = sys.argv[1:]\n"
    "cfg = pathlib.Path(a[a.index('--config') + 1])\n"
    "(cfg.parent / 'handed_over.json').write_text(json.dumps({'argv': a, 'config': cfg.read_text()}))\n"
)


@pytest.fixture(scope="module")
def trigger_model(mlflow_server: str) -> Monitored:
    return register_monitored(mlflow_server, "monitoring-trigger")


def _config(cooldown: float) -> ModelMonitorConfig:
    return ModelMonitorConfig(
        drift=DriftRules(),
        retrain=RetrainPolicy(consecutive_windows=2, min_rows=500, cooldown_seconds=cooldown),
    )


def test_trigger_fires_once_per_cause_and_cooldown_holds(
    trigger_model: Monitored, mlflow_server: str, tmp_path: Path
) -> None:
    store = SqlPredictionLog(f"sqlite:///{tmp_path / 'log.db'}")
    registry, records = ports(mlflow_server)
    retrainer = SubprocessRetrainer(tmp_path / "retraining", command=(sys.executable, "-c", RECORDER))
    name, version = trigger_model.model.name, trigger_model.model.version
    windows = [Window(T0 + i * WINDOW, T0 + (i + 1) * WINDOW) for i in range(6)]
    for i, shift in enumerate([1.0, 1.0, 1.0, 0.0, 1.0, 1.0]):
        write(
            store, window_batches(trigger_model, windows[i].start, 800, seed=100 + i, shift=shift, blocks=1)
        )
    long_cooldown = _config(cooldown=36_000)

    def run(i: int, config: ModelMonitorConfig = long_cooldown, retrain: bool = True) -> Decision:
        outcome = run_window(
            name,
            windows[i],
            store=store,
            registry=registry,
            records=records,
            config=config,
            retrainer=retrainer if retrain else None,
        )
        tags = mlflow.MlflowClient(mlflow_server).get_run(outcome.run_id).data.tags
        # a re-run of the window that fired carries the firing over and says what it decided itself
        assert (
            tags.get("modelloop.retrain.rerun_decision", tags[TAG_RETRAIN_DECISION])
            == outcome.decision.decision
        )
        return outcome.decision.decision

    assert run(0) is Decision.NOT_PERSISTENT
    first = run_window(
        name,
        windows[1],
        store=store,
        registry=registry,
        records=records,
        config=long_cooldown,
        retrainer=retrainer,
    )
    assert first.decision.decision is Decision.FIRED and first.launch is not None
    # the cause names the window whose run fired; the streak (never fired twice) its first window
    assert first.decision.cause == f"drift:{version}:{windows[1].id}"
    assert first.decision.streak == f"drift:{version}:{windows[0].id}"
    assert retrainer.wait(first.run_id, timeout=60) == 0
    handed = json.loads(Path(first.launch.details["config"]).with_name("handed_over.json").read_text())
    assert handed["argv"] == [
        "--config",
        first.launch.details["config"],
        "--tracking-uri",
        mlflow_server,
        "--triggered-by",
        first.run_id,
    ]
    assert handed["config"] == TRAINING_CONFIG

    client = mlflow.MlflowClient(mlflow_server)
    run_tags = client.get_run(first.run_id).data.tags
    assert run_tags[TAG_RETRAIN_CAUSE] == first.decision.cause
    assert run_tags["modelloop.retrain.pid"] == first.launch.details["pid"]
    for tags in (client.get_registered_model(name).tags, client.get_model_version(name, version).tags):
        assert tags[TAG_RETRAIN_CAUSE] == first.decision.cause
        assert tags[TAG_RETRAIN_MONITORING_RUN] == first.run_id
        assert tags[TAG_RETRAIN_STREAK] == first.decision.streak
        assert parse_fired_at(tags[TAG_RETRAIN_FIRED_AT]) == windows[1].end
        assert (
            tags[TAG_RETRAIN_FIRED_AT] == datetime.fromtimestamp(windows[1].end, UTC).isoformat()[:-6] + "Z"
        )

    assert run(2) is Decision.ALREADY_FIRED  # the streak goes on: same streak
    assert run(1) is Decision.ALREADY_FIRED  # re-running the window that fired does not fire again
    (rerun_id,) = run_ids(records, name, windows[1].id)
    rerun_tags = client.get_run(rerun_id).data.tags
    assert (
        rerun_tags[TAG_RETRAIN_DECISION] == "fired"
        and rerun_tags["modelloop.retrain.replaced_run"] == first.run_id
    )
    assert client.get_model_version(name, version).tags[TAG_RETRAIN_MONITORING_RUN] == rerun_id
    assert run(3) is Decision.NOT_PERSISTENT  # clean window ends the streak
    assert run(4) is Decision.NOT_PERSISTENT
    assert run(5) is Decision.COOLDOWN  # a new streak, inside the cool-down
    assert run(5, _config(cooldown=0), retrain=False) is Decision.SUPPRESSED
    assert run(5, _config(cooldown=0)) is Decision.FIRED
    assert client.get_registered_model(name).tags[TAG_RETRAIN_STREAK] == f"drift:{version}:{windows[4].id}"
    assert client.get_registered_model(name).tags[TAG_RETRAIN_CAUSE] == f"drift:{version}:{windows[5].id}"
    assert retrainer.running() == 0 or retrainer.wait(run_ids(records, name, windows[5].id)[0], 60) == 0

    fired = client.search_runs(
        [records.experiment_id()],
        f"tags.`modelloop.monitor.model` = '{name}' and tags.`{TAG_RETRAIN_DECISION}` = 'fired'",
    )
    assert sorted(r.data.tags[TAG_RETRAIN_CAUSE] for r in fired) == sorted(
        [f"drift:{version}:{windows[1].id}", f"drift:{version}:{windows[5].id}"]
    )
    store.close()


def test_quality_below_its_floor_fires_once(monitored: Monitored, mlflow_server: str, tmp_path: Path) -> None:
    """Labels recorded through the feedback API put a window's accuracy below the floor: the trigger fires
    with a quality cause, a window with too few labels does not count, and the next breached window is the
    same cause (not fired again)."""
    store = SqlPredictionLog(f"sqlite:///{tmp_path / 'log.db'}")
    registry, records = ports(mlflow_server)
    retrainer = SubprocessRetrainer(tmp_path / "retraining", command=(sys.executable, "-c", RECORDER))
    name, version = monitored.model.name, monitored.model.version
    windows = [Window(T0 + i * WINDOW, T0 + (i + 1) * WINDOW) for i in (40, 41, 42)]
    for i, (window, labelled) in enumerate(zip(windows, (40, 300, 300), strict=True)):
        batches = window_batches(monitored, window.start, 1200, seed=200 + i, prefix=f"q{i}", blocks=1)
        write(store, batches)
        table = batches[0].table
        ids = table.column("_request_id").to_pylist()[:labelled]
        predicted = table.column("_prediction").to_pylist()[:labelled]
        # 40 % of the labels contradict the logged prediction: accuracy 0.6
        record_feedback(
            store,
            {r: (1 - p if j % 5 < 2 else p) for j, (r, p) in enumerate(zip(ids, predicted, strict=True))},
        )
    config = ModelMonitorConfig(
        retrain=RetrainPolicy(quality_floor=0.9, min_labels=100, min_rows=500, cooldown_seconds=0)
    )
    outcomes = [
        run_window(
            name, w, store=store, registry=registry, records=records, config=config, retrainer=retrainer
        )
        for w in windows
    ]
    store.close()
    few, fired, same = outcomes
    assert few.quality is not None and few.quality.labelled == 40
    assert few.decision.decision is Decision.NOT_PERSISTENT  # 40 labels < min_labels: no breach
    assert fired.quality is not None and fired.quality.metrics["accuracy"] == pytest.approx(0.6)
    assert fired.decision.decision is Decision.FIRED and fired.launch is not None
    assert fired.decision.cause == f"quality:{version}:{windows[1].id}"
    assert retrainer.wait(fired.run_id, timeout=60) == 0
    assert same.decision.decision is Decision.ALREADY_FIRED and same.decision.streak == fired.decision.streak
    client = mlflow.MlflowClient(mlflow_server)
    breached = [client.get_run(o.run_id).data.tags[TAG_QUALITY_BREACHED] for o in outcomes]
    assert breached == ["0", "1", "1"]
    assert client.get_run(fired.run_id).data.metrics["quality.accuracy"] == pytest.approx(0.6)
    assert client.get_model_version(name, version).tags[TAG_RETRAIN_MONITORING_RUN] == fired.run_id
