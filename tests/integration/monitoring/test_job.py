"""The monitoring job against a real MLflow server and a real prediction log (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest
from click.testing import CliRunner
from mlflow.entities import ViewType

from modelloop.cli import cli
from modelloop.contract.predlog import PredictionBatch, SqlPredictionLog
from modelloop.contract.registry import (
    MONITORING_EXPERIMENT,
    TAG_MONITOR_MODEL,
    TAG_MONITOR_STATUS,
    TAG_MONITOR_WINDOW,
    TAG_RETRAIN_DECISION,
    Route,
)
from modelloop.monitoring.config import ModelMonitorConfig, MonitorConfig, RetrainPolicy
from modelloop.monitoring.drift import feature_drift
from modelloop.monitoring.feedback import record_feedback
from modelloop.monitoring.job import PassResult, run_pass, run_window
from modelloop.monitoring.run_content import FEATURES_TABLE_PATH
from modelloop.monitoring.window import Window, WindowReader
from tests.integration.monitoring.conftest import (
    T0,
    TEST_METRICS,
    WINDOW,
    Monitored,
    ports,
    register_monitored,
    run_ids,
    window_batches,
    write,
)

NO_RETRAIN = ModelMonitorConfig(retrain=RetrainPolicy(enabled=False))


def _window(index: int) -> Window:
    return Window(T0 + index * WINDOW, T0 + (index + 1) * WINDOW)


def _artifacts(client: mlflow.MlflowClient, run_id: str) -> set[str]:
    return {a.path for a in client.list_artifacts(run_id)}


def test_drifted_window_is_flagged_and_clean_window_is_not(
    store: SqlPredictionLog, monitored: Monitored, mlflow_server: str, tmp_path: Path
) -> None:
    registry, records = ports(mlflow_server)
    clean, drifted = _window(0), _window(1)
    write(store, window_batches(monitored, clean.start, 3000, seed=1))
    write(store, window_batches(monitored, drifted.start, 3000, seed=2, shift=1.0))

    ok = run_window(
        monitored.model.name, clean, store=store, registry=registry, records=records, config=NO_RETRAIN
    )
    bad = run_window(
        monitored.model.name, drifted, store=store, registry=registry, records=records, config=NO_RETRAIN
    )

    assert ok.status == "ok" and ok.rows == 3000 and ok.version == monitored.model.version
    assert ok.summary is not None and not ok.summary.dataset_drifted
    assert [n for n, f in ok.features.items() if f.drifted] == []
    assert bad.summary is not None and bad.summary.dataset_drifted
    assert bad.summary.share_drifted == 1.0

    client = mlflow.MlflowClient(mlflow_server)
    run = client.get_run(bad.run_id)
    metrics, params, tags = run.data.metrics, run.data.params, run.data.tags
    feature = "mean_radius"
    # a handful of summary metrics; the per-feature statistics are a table artifact beside the report
    assert not any(k.startswith(("drift.psi.", "drift.wasserstein.", "drift.ks_")) for k in metrics)
    assert len(metrics) <= 30
    table = json.loads(
        Path(client.download_artifacts(bad.run_id, FEATURES_TABLE_PATH, str(tmp_path))).read_text()
    )
    rows = {row[0]: dict(zip(table["columns"], row, strict=True)) for row in table["data"]}
    assert set(rows) == {*bad.features, "(prediction)"}
    for stat in ("psi", "ks_stat", "ks_pvalue", "wasserstein", "missing_rate_change"):
        assert rows[feature][stat] == pytest.approx(bad.features[feature].stats[stat])
    assert rows[feature]["decided_by"] == "wasserstein >= 0.1" and rows[feature]["value"] >= 0.1
    assert rows[feature]["drifted"] is True
    assert run.info.run_name.startswith(f"monitor {monitored.model.name} 22:")
    assert "**Dataset drifted.** 30 of 30 features drifted" in tags["mlflow.note.content"]
    assert metrics["drift.share_drifted"] == 1.0 and metrics["drift.dataset_drifted"] == 1.0
    assert {"prediction.drift.psi", "prediction.drift.js", "prediction.drift.chi2_pvalue"} <= set(metrics)
    assert metrics["window.rows"] == 3000
    assert params["model_version"] == monitored.model.version
    assert params["window_start"].startswith("2023-11-14T22:")
    assert params["drift.wasserstein"] == "0.1" and params["drift.drift_share"] == "0.5"
    assert params["drift_rules_applied"] == "wasserstein >= 0.1, share_drifted >= 0.5"
    assert tags[TAG_MONITOR_MODEL] == monitored.model.name and tags[TAG_MONITOR_WINDOW] == drifted.id
    assert tags[TAG_MONITOR_STATUS] == "ok" and tags[TAG_RETRAIN_DECISION] == "disabled"
    assert client.get_experiment(run.info.experiment_id).name == MONITORING_EXPERIMENT
    assert {"report.html", "drift_history.png", "drift.json"} <= _artifacts(client, bad.run_id)
    report = Path(client.download_artifacts(bad.run_id, "report.html", str(tmp_path))).read_text()
    assert "DRIFTED" in report and report.count("data:image/png;base64,") == 2  # history, distributions
    payload = json.loads(Path(client.download_artifacts(bad.run_id, "drift.json", str(tmp_path))).read_text())
    assert payload["features"][feature]["drifted"] is True
    assert client.get_run(ok.run_id).data.metrics["drift.dataset_drifted"] == 0.0


def test_rerunning_a_window_replaces_its_run(
    store: SqlPredictionLog, monitored: Monitored, mlflow_server: str
) -> None:
    registry, records = ports(mlflow_server)
    window = _window(5)
    write(store, window_batches(monitored, window.start, 1500, seed=3))
    first = run_window(
        monitored.model.name, window, store=store, registry=registry, records=records, config=NO_RETRAIN
    )
    write(store, window_batches(monitored, window.start, 500, seed=4, prefix="late"))
    second = run_window(
        monitored.model.name, window, store=store, registry=registry, records=records, config=NO_RETRAIN
    )
    assert first.run_id in second.replaced
    assert run_ids(records, monitored.model.name, window.id) == [second.run_id]
    client = mlflow.MlflowClient(mlflow_server)
    assert client.get_run(first.run_id).info.lifecycle_stage == "deleted"
    assert client.get_run(second.run_id).data.metrics["window.rows"] == 2000
    active = client.search_runs(
        [records.experiment_id()],
        f"tags.`{TAG_MONITOR_WINDOW}` = '{window.id}' "
        f"and tags.`{TAG_MONITOR_MODEL}` = '{monitored.model.name}'",
        run_view_type=ViewType.ACTIVE_ONLY,
    )
    assert [r.info.run_id for r in active] == [second.run_id]


def test_window_without_traffic_is_not_a_run(
    sqlite_store: SqlPredictionLog, monitored: Monitored, mlflow_server: str
) -> None:
    registry, records = ports(mlflow_server)
    outcome = run_window(
        monitored.model.name,
        _window(9),
        store=sqlite_store,
        registry=registry,
        records=records,
        config=NO_RETRAIN,
    )
    assert outcome.status == "empty" and outcome.rows == 0 and outcome.features == {}
    assert outcome.run_id == "" and run_ids(records, monitored.model.name, _window(9).id) == []


def test_small_window_is_insufficient_not_drifted(
    sqlite_store: SqlPredictionLog, monitored: Monitored, mlflow_server: str
) -> None:
    registry, records = ports(mlflow_server)
    window = _window(11)
    write(sqlite_store, window_batches(monitored, window.start, 12, seed=5, shift=2.0, blocks=1))
    outcome = run_window(
        monitored.model.name,
        window,
        store=sqlite_store,
        registry=registry,
        records=records,
        config=NO_RETRAIN,
    )
    assert outcome.status == "insufficient"
    assert outcome.summary is not None and outcome.summary.drifted == 0
    run = mlflow.MlflowClient(mlflow_server).get_run(outcome.run_id)
    assert run.data.tags[TAG_MONITOR_STATUS] == "insufficient"
    assert "drift.share_drifted" not in run.data.metrics and run.data.metrics["drift.n_evaluated"] == 0


def test_quality_from_feedback_beside_training_value(
    store: SqlPredictionLog, monitored: Monitored, mlflow_server: str
) -> None:
    registry, records = ports(mlflow_server)
    window = _window(13)
    batches = window_batches(monitored, window.start, 1200, seed=6)
    write(store, batches)
    table = batches[0].table
    ids = table.column("_request_id").to_pylist()
    predicted = table.column("_prediction").to_pylist()
    # labels for the first block only; every fourth label contradicts the prediction
    truth = {rid: (1 - p if i % 4 == 0 else p) for i, (rid, p) in enumerate(zip(ids, predicted, strict=True))}
    assert record_feedback(store, truth, model_name=monitored.model.name) == len(truth)
    outcome = run_window(
        monitored.model.name, window, store=store, registry=registry, records=records, config=NO_RETRAIN
    )
    assert outcome.quality is not None and outcome.quality.labelled == len(truth)
    expected_accuracy = float(np.mean([truth[r] == p for r, p in zip(ids, predicted, strict=True)]))
    assert outcome.quality.metrics["accuracy"] == pytest.approx(expected_accuracy, abs=1e-12)
    metrics = mlflow.MlflowClient(mlflow_server).get_run(outcome.run_id).data.metrics
    assert metrics["quality.accuracy"] == pytest.approx(expected_accuracy)
    assert metrics["quality.training.accuracy"] == pytest.approx(TEST_METRICS["accuracy"])
    assert metrics["quality.labelled"] == len(truth)
    assert "quality.f1" in metrics


def test_shadow_and_other_versions_are_counted_not_compared(
    sqlite_store: SqlPredictionLog, monitored: Monitored, mlflow_server: str
) -> None:
    registry, records = ports(mlflow_server)
    window = _window(15)
    write(sqlite_store, window_batches(monitored, window.start, 1500, seed=7))
    write(
        sqlite_store,
        window_batches(monitored, window.start, 400, seed=8, shift=3.0, route=Route.SHADOW, prefix="s"),
    )
    outcome = run_window(
        monitored.model.name,
        window,
        store=sqlite_store,
        registry=registry,
        records=records,
        config=NO_RETRAIN,
    )
    assert outcome.rows == 1500 and outcome.summary is not None and not outcome.summary.dataset_drifted
    run = mlflow.MlflowClient(mlflow_server).get_run(outcome.run_id)
    assert run.data.metrics["window.rows_not_compared"] == 400
    assert run.data.params["rows_not_compared_by_version_route"] == f"{monitored.model.version}/shadow=400"


def test_reading_in_several_passes_gives_the_same_statistics(
    sqlite_store: SqlPredictionLog, monitored: Monitored, mlflow_server: str
) -> None:
    registry, _ = ports(mlflow_server)
    window = _window(17)
    write(sqlite_store, window_batches(monitored, window.start, 2000, seed=9, shift=0.3, blocks=5))
    # shadow rows between the served ones: every pass must leave them out the same way
    shadow = window_batches(monitored, window.start, 300, seed=14, shift=2.0, route=Route.SHADOW, prefix="s")
    write(sqlite_store, shadow)
    write(sqlite_store, window_batches(monitored, window.start, 10, seed=15, blocks=1, prefix="x"))
    profile = registry.reference_profile(monitored.model.name, monitored.model.version)
    results = []
    for budget in (512 << 20, 8 * 2000 * 4):  # everything at once; four columns a pass
        reader = WindowReader(sqlite_store, monitored.model.name, window, memory_budget=budget)
        rows = reader.first_pass()
        results.append(
            {
                name: feature_drift(
                    name, profile.features[name], col, ModelMonitorConfig().drift, total=2010
                ).stats
                for name, col in reader.columns(rows, list(profile.features))
            }
        )
    assert len(results[1]) == 30 and results[0] == results[1]
    assert rows.served_rows == 2010 and rows.others == {f"{monitored.model.version}/shadow": 300}


def test_monitor_command_writes_the_window(
    sqlite_store: SqlPredictionLog, monitored: Monitored, mlflow_server: str, tmp_path: Path
) -> None:
    window = _window(19)
    write(sqlite_store, window_batches(monitored, window.start, 1200, seed=10, shift=1.0))
    url = f"sqlite:///{tmp_path / 'predictions.db'}"
    config = tmp_path / "monitoring.yaml"
    config.write_text(f"models:\n  {monitored.model.name}:\n    retrain: {{consecutive_windows: 5}}\n")
    start, end = window.iso()
    common = ["--model", monitored.model.name, "--tracking-uri", mlflow_server, "--prediction-log-url", url]
    result = CliRunner().invoke(
        cli, ["monitor", *common, "--start", start, "--end", end, "--no-retrain", "--config", str(config)]
    )
    assert result.exit_code == 0, result.output
    assert (
        f"{monitored.model.name} {window.id} version={monitored.model.version} status=ok rows=1200"
        in result.output
    )
    assert "retrain=not_persistent" in result.output
    run_id = result.output.strip().split("run=")[-1]
    params = mlflow.MlflowClient(mlflow_server).get_run(run_id).data.params
    assert params["retrain.consecutive_windows"] == "5"
    now = CliRunner().invoke(cli, ["monitor", *common, "--window", "15m", "--no-retrain"])
    assert now.exit_code == 0 and "status=empty rows=0 (no traffic; not recorded" in now.output
    missing = CliRunner().invoke(
        cli, ["monitor", "--model", "no-such-model", *common[2:], "--start", start, "--end", end]
    )
    # a one-shot pass for a model MLflow does not know is a typo, not an empty window: one line, exit 3
    assert missing.exit_code == 3 and "no-such-model is not registered" in missing.output
    ghost = window_batches(monitored, window.start, 50, seed=11, blocks=1)[0]
    sqlite_store.write(PredictionBatch("ghost", "4", Route.CHAMPION, ghost.table))
    failed = CliRunner().invoke(
        cli, ["monitor", "--model", "ghost", *common[2:], "--start", start, "--end", end]
    )
    # traffic for a model MLflow does not know: refused before anything is measured or recorded
    assert failed.exit_code == 3 and "model ghost is not registered" in failed.output


def test_scheduled_pass_skips_finished_windows_retries_failed_ones_and_isolates_failures(
    sqlite_store: SqlPredictionLog, monitored: Monitored, mlflow_server: str
) -> None:
    registry, records = ports(mlflow_server)
    window = _window(21)
    write(sqlite_store, window_batches(monitored, window.start, 1100, seed=12))
    ghost = window_batches(monitored, window.start, 50, seed=13, blocks=1)[0]
    sqlite_store.write(PredictionBatch("monitoring-ghost", "1", Route.CHAMPION, ghost.table))
    # a run of this window that failed half-way (e.g. MLflow went away mid-upload)
    failed = records.start_run(monitored.model.name, window.id, {TAG_MONITOR_STATUS: "ok"})
    records.finish(failed, failed=True)
    config = MonitorConfig(defaults={"retrain": {"enabled": False}})
    now = window.end + 30  # the scheduler ticks inside the next window

    def tick() -> PassResult:
        return run_pass(
            [monitored.model.name, "monitoring-ghost"],
            length=WINDOW,
            store=sqlite_store,
            registry=registry,
            records=records,
            config=config,
            now=now,
            skip_recorded=True,
        )

    first = tick()
    (outcome,) = first.outcomes
    assert outcome.window == window and outcome.rows == 1100 and outcome.replaced == [failed]
    assert list(first.failures) == ["monitoring-ghost"]
    assert "is not registered" in first.failures["monitoring-ghost"]
    assert run_ids(records, monitored.model.name, window.id) == [outcome.run_id]
    second = tick()
    assert second.outcomes == [] and second.skipped == [monitored.model.name]
    assert run_ids(records, monitored.model.name, window.id) == [outcome.run_id]


def test_monitor_every_interval_until_sigterm(mlflow_server: str, tmp_path: Path) -> None:
    """`modelloop monitor --every` as a real process: the last complete window is recorded once (later ticks
    skip it), a model without traffic is said once (not at every tick) and not recorded, and SIGTERM stops the
    loop cleanly."""
    name = "monitoring-loop"
    monitored = register_monitored(mlflow_server, "monitoring-loop-served")
    window = Window.last_complete(86400, time.time())
    log_url = f"sqlite:///{tmp_path / 'log.db'}"
    store = SqlPredictionLog(log_url)
    try:
        write(store, window_batches(monitored, window.start, 200, seed=21, blocks=1))
    finally:
        store.close()
    argv = [
        sys.executable,
        "-m",
        "modelloop",
        "monitor",
        "--model",
        name,
        "--model",
        monitored.model.name,
        "--window",
        "1d",
        "--every",
        "0.2s",
        "--no-retrain",
        "--tracking-uri",
        mlflow_server,
        "--prediction-log-url",
        log_url,
    ]
    _, records = ports(mlflow_server)
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not records.window_recorded(monitored.model.name, window.id):
            assert child.poll() is None, child.communicate()
            assert time.monotonic() < deadline, "no window recorded"
            time.sleep(0.2)
        time.sleep(1.0)  # several more ticks
        child.send_signal(signal.SIGTERM)
        out, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 0, err
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 2, out
    assert lines[0].startswith(f"{name} {window.id} version=- status=empty rows=0 (no traffic; not recorded")
    assert lines[1].startswith(f"{monitored.model.name} {window.id} version={monitored.model.version} ")
    assert run_ids(records, name, window.id) == []
    assert len(run_ids(records, monitored.model.name, window.id)) == 1
