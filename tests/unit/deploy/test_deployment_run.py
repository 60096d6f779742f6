"""What a rollout record's deployment run carries, decided by deploy before the MLflow adapter writes it: the
params, the tags, the duration metric, and the timeline's JSON and plot as files under the run's folder."""

from __future__ import annotations

import json
from pathlib import Path

from matplotlib.image import imread

from modelloop.contract.registry import TAG_RUN_KIND
from modelloop.deploy.registry import (
    RUN_TAG_BINDING,
    RUN_TAG_REASON,
    TIMELINE_JSON_PATH,
    TIMELINE_PLOT_PATH,
    RolloutRecord,
    deployment_run,
)

TIMELINE = [(100.0, "registry read"), (100.5, "rollout v1 -> v2 on local"), (103.25, "ready")]


def test_a_served_rollout(tmp_path: Path) -> None:
    record = RolloutRecord(
        "it", "m", "1", "2", "serving", timeline=TIMELINE, target="local", address="127.0.0.1:7001"
    )
    run = deployment_run(record, tmp_path)
    assert run.record_id == record.id and run.name == "rollout v1 → v2 on it" and not run.failed
    assert run.params == {
        "binding": "it",
        "model": "m",
        "from_version": "1",
        "to_version": "2",
        "outcome": "serving",
        "target": "local",
        "address": "127.0.0.1:7001",
        "at": "1970-01-01T00:01:43Z",  # the outcome's time: when version 2 began serving
    }
    assert "Serving since 1970-01-01T00:01:43Z" in run.description and "`127.0.0.1:7001`" in run.description
    assert "(#/models/m/versions/1?workflowType=machine_learning)" in run.description
    assert run.tags == {TAG_RUN_KIND: "deployment", RUN_TAG_BINDING: "it"}
    assert run.metrics == {"rollout.seconds": 3.25} and run.metrics_time_ms == 103250
    assert run.artifacts == tmp_path
    events = json.loads((tmp_path / TIMELINE_JSON_PATH).read_text())
    assert [(e["offset_s"], e["event"]) for e in events] == [(t - 100.0, e) for t, e in TIMELINE]
    assert imread(tmp_path / TIMELINE_PLOT_PATH).shape[1] > 300


def test_a_failed_rollout_without_a_timeline(tmp_path: Path) -> None:
    record = RolloutRecord("it", "m", None, "3", "failed", reason="x" * 5000)
    run = deployment_run(record, tmp_path)
    assert run.failed and run.params["from_version"] == "" and run.name == "rollout v3 on it"
    assert "**Failed**" in run.description and run.description.endswith("x" * 500)
    assert run.tags[RUN_TAG_REASON] == "x" * 4000
    assert run.metrics == {} and run.artifacts is None
    assert not any(tmp_path.iterdir())
