"""`modelloop feedback` and `modelloop monitor` argument handling, and the feedback Python API, on a real
SQLite prediction log."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from modelloop.cli import cli
from modelloop.contract.durations import parse_duration
from modelloop.contract.errors import InvalidInputError
from modelloop.contract.predlog import Feedback, SqlPredictionLog
from modelloop.monitoring.feedback import parse_label, read_labels_csv, record_feedback
from modelloop.monitoring.window import Window, parse_time


def _url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'log.db'}"


def test_feedback_from_flags_and_csv(tmp_path: Path) -> None:
    runner = CliRunner()
    url = _url(tmp_path)
    one = runner.invoke(cli, ["feedback", "--request-id", "a1", "--label", "1", "--prediction-log-url", url])
    assert one.exit_code == 0, one.output
    csv_file = tmp_path / "labels.csv"
    csv_file.write_text("request_id,label\na2,0\na3,cat\na1,0.5\n")
    many = runner.invoke(cli, ["feedback", "--file", str(csv_file), "--prediction-log-url", url])
    assert many.exit_code == 0 and "recorded 3 label(s)" in many.output
    store = SqlPredictionLog(url)
    assert store.read_feedback() == {"a1": 0.5, "a2": 0, "a3": "cat"}
    store.close()


def test_feedback_rejects_bad_input_and_writes_nothing(tmp_path: Path) -> None:
    runner = CliRunner()
    url = _url(tmp_path)
    bad = tmp_path / "bad.csv"
    bad.write_text("id,value\nx,1\n")
    result = runner.invoke(cli, ["feedback", "--file", str(bad), "--prediction-log-url", url])
    assert result.exit_code == 2 and "request_id and label" in result.output
    half = tmp_path / "half.csv"
    half.write_text("request_id,label\nok,1\nsecret-id,\n")
    result = runner.invoke(cli, ["feedback", "--file", str(half), "--prediction-log-url", url])
    assert result.exit_code == 2 and "line 3: label is empty" in result.output
    assert "secret-id" not in result.output
    result = runner.invoke(cli, ["feedback", "--request-id", "x", "--prediction-log-url", url])
    assert result.exit_code == 2 and "go together" in result.output
    store = SqlPredictionLog(url)
    assert store.read_feedback() == {}
    with pytest.raises(InvalidInputError, match="record 2"):
        record_feedback(store, [Feedback("a", 1), Feedback("", 2)])
    assert store.read_feedback() == {}
    assert record_feedback(store, {"a": 1, "b": "no"}, model_name="m") == 2
    assert store.read_feedback(model_name="m") == {"a": 1, "b": "no"}
    store.close()


def test_labels_csv_with_model_column(tmp_path: Path) -> None:
    path = tmp_path / "l.csv"
    path.write_text("request_id,label,model\nr1,1,churn\nr2,2.5,\n")
    records = read_labels_csv(path, model_name="default")
    assert [(r.request_id, r.label, r.model_name) for r in records] == [
        ("r1", 1, "churn"),
        ("r2", 2.5, "default"),
    ]
    assert parse_label(" 7 ") == 7 and parse_label("nan") == "nan" and parse_label("yes") == "yes"


def test_monitor_argument_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    base = [
        "monitor",
        "--model",
        "m",
        "--prediction-log-url",
        _url(tmp_path),
        "--tracking-uri",
        "http://127.0.0.1:9",
    ]
    cases = {
        (): "either --window or both --start and --end",
        ("--start", "2026-01-01T00:00:00Z"): "go together",
        ("--window", "15m", "--start", "0", "--end", "60"): "either --window",
        ("--start", "0", "--end", "60", "--every", "60s"): "--every needs --window",
        ("--window", "fifteen"): "a duration is a number with an optional unit",
        ("--start", "60", "--end", "0"): "window end must be after its start",
        ("--start", "yesterday", "--end", "0"): "ISO-8601",
    }
    for extra, message in cases.items():
        result = runner.invoke(cli, [*base, *extra])
        assert result.exit_code == 2, (extra, result.output)
        assert message in result.output, (extra, result.output)


def test_monitor_needs_a_model_and_reads_bindings(tmp_path: Path) -> None:
    runner = CliRunner()
    url = _url(tmp_path)
    result = runner.invoke(cli, ["monitor", "--window", "15m", "--prediction-log-url", url])
    assert result.exit_code == 2 and "give --model" in result.output
    bindings = tmp_path / "bindings.yaml"
    bindings.write_text("bindings:\n  - {name: a, model: churn}\n  - {name: b, model: fraud}\n")
    # the tracking server is unreachable: every bound model is tried and reported, exit code 1
    result = runner.invoke(
        cli,
        [
            "monitor",
            "--bindings",
            str(bindings),
            "--window",
            "15m",
            "--prediction-log-url",
            url,
            "--tracking-uri",
            "http://127.0.0.1:9",
        ],
        env={"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "2"},
    )
    assert result.exit_code == 1, result.output
    assert "error: churn:" in result.output and "error: fraud:" in result.output


def test_windows_are_aligned_and_named_deterministically() -> None:
    assert parse_duration("15m") == 900 and parse_duration("90") == 90 and parse_duration("2h") == 7200
    window = Window.last_complete(900, now=parse_time("2026-11-23T08:29:59Z"))
    assert window.id == "20261123T080000Z-20261123T081500Z"
    assert Window.last_complete(900, now=parse_time("2026-11-23T08:30:00+00:00")).id.endswith("T083000Z")
    assert Window(0.5, 60).id == "19700101T000000.5Z-19700101T000100Z"
