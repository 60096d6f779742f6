"""`modelloop demo` end to end as a user runs it (a real subprocess, small sizes), then the records it left in
MLflow read back by a fresh MLflow server on the same data directory, then `modelloop up` on that directory:
stopping and starting again loses nothing, and Ctrl-C stops every process it started."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.entities import FileInfo

from modelloop.cli.demo_data import TARGET, DemoData
from modelloop.cli.demo_loop import BINDING, MODEL
from modelloop.client import ScoringClient
from modelloop.contract.registry import (
    DEPLOYMENTS_EXPERIMENT,
    MONITORING_EXPERIMENT,
    PRODUCTION_ALIAS,
    TAG_GATE,
    TAG_RETRAIN_DECISION,
    TAG_ROLLOUT,
    TAG_ROLLOUT_BINDING,
    TAG_TRIGGERED_BY,
)
from modelloop.deploy.mlflow_server import MlflowServer


@dataclass(frozen=True)
class DemoRun:
    data_dir: Path
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    data_dir = tmp_path_factory.mktemp("demo") / "state"
    argv = [sys.executable, "-m", "modelloop", "demo", "--data-dir", str(data_dir)]
    argv += ["--trials", "4", "--window", "8", "--rate", "15"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=600, env=env)
    return DemoRun(data_dir, proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def records(demo_run: DemoRun) -> Iterator[MlflowClient]:
    """The demo's MLflow database and artifacts, served again after the demo stopped its own server."""
    with MlflowServer(demo_run.data_dir / "mlflow") as server:
        yield MlflowClient(tracking_uri=server.url, registry_uri=server.url)


def test_every_step_happens_and_no_call_fails(demo_run: DemoRun) -> None:
    assert demo_run.returncode == 0, demo_run.stderr[-4000:]
    steps = re.findall(r"^\s+\[(ok  |FAIL|skip)\] (\d)\. ", demo_run.stdout, flags=re.MULTILINE)
    assert [s for s, _ in steps] == ["ok  "] * 7, demo_run.stdout
    traffic = re.search(r"Traffic: (\d+) calls sent, (\d+) served, (\d+) failed", demo_run.stdout)
    assert traffic is not None
    sent, served, failed = (int(g) for g in traffic.groups())
    assert failed == 0 and served == sent > 100
    assert "MLflow UI: http://127.0.0.1:" in demo_run.stdout


def test_mlflow_holds_the_whole_loop(demo_run: DemoRun, records: MlflowClient) -> None:
    client = records
    v1, v2 = (client.get_model_version(MODEL, v) for v in ("1", "2"))
    assert v1.tags[TAG_GATE] == v2.tags[TAG_GATE] == "passed"
    assert client.get_model_version_by_alias(MODEL, PRODUCTION_ALIAS).version == "2"
    # where each version runs, as the controller recorded it
    assert v2.tags[TAG_ROLLOUT] == "serving" and v2.tags[TAG_ROLLOUT_BINDING] == BINDING
    assert v1.tags[TAG_ROLLOUT] == "retired"
    deployments = client.get_experiment_by_name(DEPLOYMENTS_EXPERIMENT)
    assert deployments is not None
    rollouts = client.search_runs([deployments.experiment_id])
    assert {(r.data.params.get("to_version"), r.data.params.get("outcome")) for r in rollouts} >= {
        ("1", "serving"),
        ("2", "serving"),
    }

    # version 2 was trained because monitoring saw the drift: its run names the monitoring run that fired
    training_v1, training_v2 = (client.get_run(str(mv.run_id)) for mv in (v1, v2))
    assert TAG_TRIGGERED_BY not in training_v1.data.tags
    trigger = client.get_run(training_v2.data.tags[TAG_TRIGGERED_BY])
    assert trigger.data.tags[TAG_RETRAIN_DECISION] == "fired"
    assert trigger.data.metrics["drift.share_drifted"] >= 0.25
    report = {a.path.rsplit("/", 1)[-1] for a in _artifacts(client, trigger.info.run_id)}
    assert {"report.html", "drift_history.png"} <= report
    monitoring = client.get_experiment_by_name(MONITORING_EXPERIMENT)
    assert monitoring is not None and trigger.info.experiment_id == monitoring.experiment_id
    # the windows before the shift were not drifted, and only one window fired
    windows = client.search_runs([monitoring.experiment_id], max_results=200)
    fired = [w for w in windows if w.data.tags.get(TAG_RETRAIN_DECISION) == "fired"]
    assert [w.info.run_id for w in fired] == [trigger.info.run_id]
    calm = [
        w
        for w in windows
        if w.info.start_time < trigger.info.start_time and w.data.metrics.get("drift.n_evaluated", 0) > 0
    ]
    assert any(w.data.metrics["drift.share_drifted"] < 0.25 for w in calm)

    # model and baseline side by side on the same test rows
    for run in (training_v1, training_v2):
        assert run.data.metrics["test.roc_auc"] > run.data.metrics["baseline.test.roc_auc"]
    # the retraining learnt from the shifted rows it had labels for
    assert int(training_v2.data.params["dataset.rows"]) > int(training_v1.data.params["dataset.rows"])


def test_up_restarts_on_the_same_data_and_stops_everything(demo_run: DemoRun) -> None:
    argv = [sys.executable, "-m", "modelloop", "up", "--data-dir", str(demo_run.data_dir)]
    # one scoring server shared by the bindings (the demo ran one per binding)
    argv += ["--mlflow-port", "0", "--monitor-interval", "3600", "--local-shared"]
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        start_new_session=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout or []), daemon=True)
    reader.start()
    try:
        address = _wait_for_address(lines, proc, timeout=180)
        client = ScoringClient(address)
        try:
            row = DemoData.build().training.drop(columns=[TARGET]).head(3).to_dict(orient="records")
            result = client.predict(MODEL, row)
        finally:
            client.close()
        # the first reconcile deploys what the registry names: version 2, the demo's last promotion
        assert result.model_version == "2" and len(result.predictions) == 3
        metrics_url = _wait_for(lines, proc, r"^\s+metrics (http://127\.0\.0\.1:\d+/metrics)", timeout=30)
        with urllib.request.urlopen(metrics_url, timeout=10) as resp:
            exposition = resp.read().decode()
        assert f'modelloop_serving_model_info{{model="{MODEL}"' in exposition.replace(", ", ",")
        children = _children(proc.pid)
        assert children, "modelloop up started no processes"
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    assert "stopped" in err
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(pid) for pid in children):
        time.sleep(0.2)
    assert not [pid for pid in children if _alive(pid)]


def _artifacts(client: MlflowClient, run_id: str, path: str | None = None) -> list[FileInfo]:
    out = []
    for info in client.list_artifacts(run_id, path):
        out += _artifacts(client, run_id, info.path) if info.is_dir else [info]
    return out


def _wait_for_address(lines: list[str], proc: subprocess.Popen[str], *, timeout: float) -> str:
    return _wait_for(
        lines, proc, rf"binding {BINDING} \({MODEL}\)\s+gRPC (127\.0\.0\.1:\d+)", timeout=timeout
    )


def _wait_for(lines: list[str], proc: subprocess.Popen[str], pattern: str, *, timeout: float) -> str:
    """The first group of the first printed line matching `pattern`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in list(lines):
            found = re.search(pattern, line)
            if found:
                return found.group(1)
        if proc.poll() is not None:
            raise AssertionError(f"modelloop up exited with {proc.returncode}")
        time.sleep(0.2)
    raise AssertionError(f"nothing matching {pattern!r} printed within {timeout:.0f}s: {lines}")


def _children(pid: int) -> list[int]:
    """Every process below `pid` (from /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    out, frontier = [], [pid]
    while frontier:
        current = frontier.pop()
        kids = [p for p, parent in parents.items() if parent == current]
        out += kids
        frontier += kids
    return out


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
