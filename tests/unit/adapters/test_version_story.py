"""A version's story (its description in the MLflow UI): composed from plain facts, and the rollouts read back
from a model's deployment runs."""

from __future__ import annotations

import json

from modelloop.adapters import mlflow_rollouts as dep
from modelloop.adapters.mlflow_runs import RunRecord
from modelloop.adapters.mlflow_ui import experiment_url, run_url, version_url
from modelloop.adapters.mlflow_version_story import (
    DRIFT_TABLE_PATH,
    MONITORED_VERSION_PARAM,
    drifted_features,
    rollouts_of,
)
from modelloop.adapters.version_story import (
    MAX_DESCRIPTION,
    Gate,
    Rollout,
    RunLink,
    Trigger,
    VersionStory,
    compose,
    retraining_title,
)
from modelloop.contract.model_registry import RunInfo
from modelloop.contract.registry import TAG_MONITOR_DRIFTED
from modelloop.monitoring.records import PARAM_MODEL_VERSION
from modelloop.monitoring.run_content import FEATURES_TABLE_PATH

TRAINING = RunLink("1", "abc", "train v2 — retraining after drift")
GATE = Gate(
    verdict="passed",
    reasons=["beats the baseline on roc_auc by +0.04", "roc_auc +0.09 vs production version 1"],
    metric="roc_auc",
    model={"accuracy": 0.95, "roc_auc": 0.99},
    baseline={"accuracy": 0.9, "roc_auc": 0.95},
    baseline_name="logistic regression",
    production={"accuracy": 0.8, "roc_auc": 0.9},
    production_version="1",
)
TRIGGER = Trigger(
    run=RunLink("2", "mon1", "monitor demo 04:10-04:12"),
    monitored_version="1",
    window="20261130T041000Z-20261130T041200Z",
    drifted_features=["mean radius", "mean area"],
    cause="drift:1:20261130T041000Z-20261130T041200Z",
)


def test_a_retrained_version_says_why_it_exists_how_it_compares_and_where_it_serves() -> None:
    rollout = Rollout(
        binding="demo",
        target="local",
        address="127.0.0.1:7001",
        outcome="serving",
        serving_from="2026-11-30T04:13:00Z",
        record=RunLink("3", "dep1", "rollout v1 → v2 on demo"),
    )
    text = compose(VersionStory("demo-model", "2", TRAINING, GATE, TRIGGER, [rollout]))
    assert text.startswith("Retraining after drift · gate passed · serving on demo (local)\n\n")
    assert "### Why version 2 exists\nRetraining after drift: monitoring run " in text
    assert f"[monitor demo 04:10-04:12]({run_url(None, '2', 'mon1')})" in text
    assert f"of version [1]({version_url(None, 'demo-model', '1')})" in text
    assert "found `mean radius`, `mean area` drifted." in text
    assert f"Training run: [train v2 — retraining after drift]({run_url(None, '1', 'abc')})." in text
    lines = text.splitlines()
    header = lines.index("### Gate: passed") + 1
    assert lines[header] == (
        "| test metric | version 2 | baseline (logistic regression) | production (version 1) |"
    )
    assert lines[header + 2] == "| **roc\\_auc** (optimised) | 0.9900 | 0.9500 | 0.9000 |"  # optimised first
    assert lines[header + 3] == "| accuracy | 0.9500 | 0.9000 | 0.8000 |"
    assert "- roc\\_auc +0.09 vs production version 1" in lines
    assert lines[-1] == (
        "| demo | local | `127.0.0.1:7001` | serving | 2026-11-30T04:13:00Z | — | "
        f"[rollout v1 → v2 on demo]({run_url(None, '3', 'dep1')}) |"
    )


def test_a_first_version_not_rolled_out_yet() -> None:
    gate = Gate("passed", [], "roc_auc", {"roc_auc": 0.9}, {"roc_auc": 0.8}, "majority class")
    text = compose(VersionStory("m", "1", TRAINING, gate))
    assert text.startswith("Initial training · gate passed · not rolled out yet\n\n")
    assert "Initial training." in text and "No production version to compare with." in text
    assert text.rstrip().endswith("### Rollouts\nNot rolled out yet.")
    assert "production" not in text.split("### Gate")[1].splitlines()[1]
    assert "Trained on request" in compose(VersionStory("m", "3", None, None))


def test_text_from_records_cannot_break_the_markdown() -> None:
    trigger = Trigger(RunLink("2", "r", "a](http://evil)|x"), None, "w|1", ["f`|x"], None)
    rollout = Rollout("b|1", "local", "h`|1", "failed", None, reason="boom | [x](y)\nnext")
    text = compose(VersionStory("m", "2", None, None, trigger, [rollout]))
    assert "[a\\](http://evil)\\|x](" in text and "(window w\\|1)" in text and "`f'/x`" in text
    row = text.splitlines()[-1]
    assert row.count(" | ") == 6 and "boom \\| \\[x\\](y) next" in row and "`h'/1`" in row


def test_a_long_story_is_cut_below_mlflows_limit() -> None:
    rollouts = [Rollout("b", "local", "a", "failed", None, reason="r" * 200) for _ in range(400)]
    text = compose(VersionStory("m", "2", None, None, None, rollouts))
    assert len(text) <= MAX_DESCRIPTION and text.endswith("*(cut: the full record is on the runs)*\n")


def test_retraining_titles() -> None:
    assert retraining_title(None) == "Retraining after drift"
    assert retraining_title("drift:3:w") == "Retraining after drift"
    assert retraining_title("quality:3:w") == "Retraining after a quality breach"


def test_ui_addresses_open_on_the_model_training_views() -> None:
    assert (
        run_url("http://h:5000/", "1", "r")
        == "http://h:5000/#/experiments/1/runs/r?workflowType=machine_learning"
    )
    assert (
        version_url(None, "my model", "2") == "#/models/my%20model/versions/2?workflowType=machine_learning"
    )
    assert experiment_url("file:///x", "7") == "#/experiments/7?workflowType=machine_learning"


def _deployment(
    run_id: str, binding: str, from_v: str, to_v: str, outcome: str, at: str, **tags: str
) -> RunRecord:
    params = {
        dep.PARAM_BINDING: binding,
        dep.PARAM_MODEL: "m",
        dep.PARAM_FROM_VERSION: from_v,
        dep.PARAM_TO_VERSION: to_v,
        dep.PARAM_OUTCOME: outcome,
        dep.PARAM_TARGET: "local",
        dep.PARAM_ADDRESS: f"127.0.0.1:{len(binding)}",
        dep.PARAM_AT: at,
    }
    return RunRecord(
        run_id, 0, "FINISHED", params=params, tags={"mlflow.runName": run_id, **tags}, experiment_id="9"
    )


def test_rollouts_of_a_version_with_when_and_by_what_it_was_replaced() -> None:
    runs = [  # newest first, as the server answers
        _deployment("d4", "shadow", "", "2", "serving", "2026-11-30T04:20:00Z"),
        _deployment(
            "d3", "demo", "2", "3", "failed", "2026-11-30T04:15:00Z", **{"modelloop.rollout.reason": "boom"}
        ),
        _deployment("d2", "demo", "1", "2", "serving", "2026-11-30T04:13:00Z"),
        _deployment("d1", "demo", "", "1", "serving", "2026-11-30T04:00:00Z"),
    ]
    [v1] = rollouts_of(runs, "1")
    assert (v1.binding, v1.outcome, v1.serving_from, v1.serving_until, v1.replaced_by) == (
        "demo",
        "retired",
        "2026-11-30T04:00:00Z",
        "2026-11-30T04:13:00Z",
        "2",
    )
    assert v1.record == RunLink("9", "d1", "d1") and v1.address == "127.0.0.1:4"
    v2_demo, v2_shadow = rollouts_of(runs, "2")  # a failed rollout of v3 does not retire v2
    assert (v2_demo.outcome, v2_demo.serving_until, v2_shadow.binding) == ("serving", None, "shadow")
    [v3] = rollouts_of(runs, "3")
    assert (v3.outcome, v3.serving_from, v3.reason) == ("failed", None, "boom")
    assert rollouts_of(runs, "4") == []


def test_drifted_features_from_the_tag_else_the_verdict_metrics() -> None:
    tagged = RunInfo(
        "r", "2", "FINISHED", tags={TAG_MONITOR_DRIFTED: "b,a"}, metrics={"drift.drifted.c": 1.0}
    )
    assert drifted_features(tagged) == ["b", "a"]
    metrics = {"drift.drifted.b": 1.0, "drift.drifted.a": 1.0, "drift.drifted.z": 0.0, "drift.psi.a": 3.0}
    assert drifted_features(RunInfo("r", "2", "FINISHED", metrics=metrics)) == ["a", "b"]


def test_drifted_features_from_the_per_feature_table() -> None:
    table = {
        "columns": ["feature", "kind", "drifted"],
        "data": [
            ["mean radius", "numeric", True],
            ["(prediction)", "numeric", True],
            ["b", "numeric", False],
        ],
    }
    run = RunInfo("r", "2", "FINISHED", metrics={"drift.drifted.z": 1.0})
    assert drifted_features(run, table=json.dumps(table).encode()) == ["mean radius"]
    assert drifted_features(run, table=b"{not json") == ["z"]  # unreadable: the metrics of older runs


def test_the_names_read_from_monitoring_runs_are_monitorings() -> None:
    assert MONITORED_VERSION_PARAM == PARAM_MODEL_VERSION
    assert DRIFT_TABLE_PATH == FEATURES_TABLE_PATH
