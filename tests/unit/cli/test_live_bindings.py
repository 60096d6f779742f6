"""Bindings changed while the controller runs: the watcher applies each valid new file, says a bad one in one
log line and keeps the bindings in use; the live controller serves the new set and deletes what a removed
binding served."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from modelloop.cli.live_bindings import BindingsWatcher, LiveController
from modelloop.deploy.bindings import Binding, parse_bindings
from modelloop.deploy.fake import FakeTarget
from tests.unit.deploy.memory_registry import MemoryRegistry


def wait_for(predicate: Callable[[], object], limit: float = 10.0) -> None:
    """Wait until `predicate()` holds; `limit` bounds a hang."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.01)
    raise AssertionError("condition not met")


def test_watcher_applies_valid_changes_and_keeps_the_old_on_a_bad_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "bindings.yaml"
    applied: list[list[str]] = []
    watcher = BindingsWatcher(path, lambda bs: applied.append([b.name for b in bs]))
    assert not watcher.check()  # no file, as at the start: nothing to apply
    path.write_text("bindings: [{name: a, model: m}]\n")
    assert watcher.check() and applied == [["a"]]
    assert not watcher.check()  # unchanged content
    caplog.set_level(logging.WARNING)
    path.write_text("bindings: [{name: a, model: m, replicas: 0, token: s3cret}]\n")
    assert not watcher.check() and not watcher.check()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "bindings.0.replicas" in warnings[0] and "s3cret" not in warnings[0]
    assert "the bindings in use stay" in warnings[0]
    path.write_text("bindings: [{name: a, model: m}, {name: b, model: n}]\n")
    assert watcher.check() and applied[-1] == ["a", "b"]
    path.unlink()
    assert watcher.check() and applied[-1] == []


def test_watcher_thread_picks_up_a_change(tmp_path: Path) -> None:
    path = tmp_path / "bindings.yaml"
    applied: list[list[Binding]] = []
    watcher = BindingsWatcher(path, applied.append, every=0.05).start()
    try:
        path.write_text("bindings: [{name: a, model: m}]\n")
        wait_for(lambda: applied)
    finally:
        watcher.stop()
    assert [b.name for b in applied[0]] == ["a"]


def test_live_controller_adds_changes_and_removes_bindings() -> None:
    registry, target = MemoryRegistry(), FakeTarget()
    registry.aliases[("m", "production")] = "1"
    registry.aliases[("m", "staging")] = "2"
    registry.aliases[("n", "production")] = "7"
    controller = LiveController([], registry, {"local": target}, poll_interval=3600)
    controller.start()
    try:
        added = controller.set_bindings(parse_bindings({"bindings": [{"name": "a", "model": "m"}]}))
        assert added == (["a"], [], [])
        wait_for(lambda: (s := target.get("a")) is not None and s.champion_version == "1")
        both = parse_bindings(
            {"bindings": [{"name": "a", "model": "m", "alias": "staging"}, {"name": "b", "model": "n"}]}
        )
        assert controller.set_bindings(both) == (["b"], ["a"], [])
        wait_for(lambda: (s := target.get("a")) is not None and s.champion_version == "2")
        wait_for(lambda: (s := target.get("b")) is not None and s.champion_version == "7")
        assert controller.set_bindings(both[1:]) == ([], [], ["a"])
        assert target.get("a") is None  # what the removed binding served is gone at once
        assert controller.reconcile_one("a") is None  # a removed binding still queued is skipped
    finally:
        controller.stop()
    assert target.get("b") is not None
