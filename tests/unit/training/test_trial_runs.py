"""Trial runs written in batches: both sinks leave the same nested runs in a real (SQLite) tracking store."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient

from modelloop.contract.registry import TAG_RUN_KIND
from modelloop.training.trial_runs import (
    TAG_TRIAL_PRUNED,
    TAG_TRIAL_STATE,
    TAG_TRIAL_WORKER,
    WORKER_ATTR,
    ClientTrialSink,
    SqlTrialSink,
    TrialRecorder,
    make_sink,
)


def objective(trial: optuna.Trial) -> float:
    trial.set_user_attr(WORKER_ATTR, "host:1")
    x = trial.suggest_float("x", -1, 1)
    trial.report(x * 2, 0)
    if trial.number == 3:
        raise optuna.TrialPruned()
    if trial.number == 4:
        raise ValueError("bad combination")
    return x**2


@pytest.mark.parametrize("kind", ["sql", "client"])
def test_nested_trial_runs(tmp_path: Path, kind: str) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("e", artifact_location=str(tmp_path / "artifacts"))
    parent = client.create_run(experiment).info.run_id
    sink = (
        make_sink(uri, experiment_id=experiment, parent_run_id=parent, metric="loss")
        if kind == "sql"
        else ClientTrialSink(client, experiment_id=experiment, parent_run_id=parent, metric="loss")
    )
    assert isinstance(sink, SqlTrialSink if kind == "sql" else ClientTrialSink)
    recorder = TrialRecorder(sink, flush_interval=0.05, max_batch=4)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(objective, n_trials=12, callbacks=[recorder], catch=(ValueError,), n_jobs=2)
    stats = recorder.close()
    assert (stats.written, stats.failed) == (12, 0)

    runs = client.search_runs(
        [experiment], filter_string=f"tags.mlflow.parentRunId = '{parent}'", max_results=50
    )
    assert len(runs) == 12
    by_number = {int(r.data.tags["modelloop.trial.number"]): r for r in runs}
    assert sorted(by_number) == list(range(12))
    done = by_number[0]
    assert done.info.run_name == "trial-0000" and done.info.status == "FINISHED"
    assert done.data.tags[TAG_RUN_KIND] == "trial" and done.data.tags[TAG_TRIAL_WORKER] == "host:1"
    assert float(done.data.params["x"]) == study.trials[0].params["x"]
    assert done.data.metrics["validation.loss"] == pytest.approx(study.trials[0].value)
    history = client.get_metric_history(done.info.run_id, "validation.loss.by_stage")
    assert [(m.step, m.value) for m in history] == [(0, pytest.approx(study.trials[0].params["x"] * 2))]
    pruned = by_number[3]  # stopped early on purpose: a finished run, tagged pruned (not a red KILLED)
    assert pruned.info.status == "FINISHED" and pruned.data.tags[TAG_TRIAL_STATE] == "PRUNED"
    assert pruned.data.tags[TAG_TRIAL_PRUNED] == "true" and TAG_TRIAL_PRUNED not in done.data.tags
    assert by_number[4].info.status == "FAILED" and "validation.loss" not in by_number[4].data.metrics
    assert all(r.info.end_time >= r.info.start_time for r in runs)


def test_http_tracking_uses_the_client_sink() -> None:
    sink = make_sink("http://127.0.0.1:1", experiment_id="1", parent_run_id="p", metric="m")
    assert isinstance(sink, ClientTrialSink)
