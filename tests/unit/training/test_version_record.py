"""What a registered version and its training run say in the MLflow UI (names, notes, tags), how an
interrupted training ends its run, and Optuna's own logger kept quiet while modelloop reports the trials."""

from __future__ import annotations

import logging
import os
import signal

import optuna
import pytest

from modelloop.contract.registry import (
    TAG_GATE,
    TAG_GATE_PRODUCTION,
    TAG_TRAINING_RUN,
    TAG_TRIGGERED_BY,
    TAG_TRIGGERED_BY_CAUSE,
)
from modelloop.training.gate import GateResult, Production
from modelloop.training.interrupts import TrainingInterrupted, run_status_for, sigterm_interrupts
from modelloop.training.progress import quiet_optuna
from modelloop.training.version_record import registration_tags, run_name, run_note

GATE = GateResult(True, ["beats the baseline on roc_auc by +0.04"], 0.04, Production("1", {"roc_auc": 0.9}))
RETRAIN = {TAG_TRIGGERED_BY: "mon1", TAG_TRIGGERED_BY_CAUSE: "drift:1:w"}


def test_run_names_say_which_version_and_why() -> None:
    assert run_name("2", RETRAIN) == "train v2 — retraining after drift"
    assert run_name("3", {TAG_TRIGGERED_BY: "m", TAG_TRIGGERED_BY_CAUSE: "quality:2:w"}) == (
        "train v3 — retraining after a quality breach"
    )
    assert run_name("1", {}) == "train v1 — initial training"
    assert run_name("4", {}) == "train v4 — training on request"


def test_a_retrained_version_carries_the_retraining_tags_and_the_production_it_beat() -> None:
    tags = registration_tags(GATE, "run1", retrain=RETRAIN)
    assert tags[TAG_GATE] == "passed" and tags[TAG_TRAINING_RUN] == "run1"
    assert tags[TAG_GATE_PRODUCTION] == "1"
    assert tags[TAG_TRIGGERED_BY] == "mon1" and tags[TAG_TRIGGERED_BY_CAUSE] == "drift:1:w"
    first = registration_tags(GateResult(True, [], 0.1), "run0", retrain={})
    assert TAG_GATE_PRODUCTION not in first and TAG_TRIGGERED_BY not in first


def test_the_training_run_note() -> None:
    note = run_note("m", "2", GATE, alias="production", retrain=RETRAIN)
    assert note.startswith("Trained and registered [version 2](#/models/m/versions/2?workflowType=")
    assert "gate passed, alias `production` moved to it" in note
    assert "Retraining after drift: asked for by monitoring run `mon1`" in note
    assert "- beats the baseline on roc_auc by +0.04" in note
    assert "no alias moved" in run_note("m", "1", GATE, alias=None, retrain={})


def test_sigterm_interrupts_the_training_and_its_run_ends_killed() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(TrainingInterrupted) as stopped, sigterm_interrupts():
        os.kill(os.getpid(), signal.SIGTERM)  # the handler runs in this (the main) thread, right away
        raise AssertionError("SIGTERM did not interrupt")
    assert signal.getsignal(signal.SIGTERM) is before
    assert run_status_for(stopped.value) == "KILLED"
    assert run_status_for(KeyboardInterrupt()) == "KILLED"
    assert run_status_for(ValueError()) == "FAILED"


def test_optuna_is_quiet_only_inside_the_block() -> None:
    heard: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = heard.append  # type: ignore[method-assign]
    optuna_logger = logging.getLogger("optuna")
    optuna_logger.addHandler(handler)
    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.INFO)
    try:
        study = optuna.create_study()
        with quiet_optuna():
            study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
        assert not [r for r in heard if "finished with value" in r.getMessage()]
        assert optuna.logging.get_verbosity() == optuna.logging.INFO  # restored
        study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
        assert [r for r in heard if "finished with value" in r.getMessage()]  # outside: Optuna's own line
    finally:
        optuna_logger.removeHandler(handler)
        optuna.logging.set_verbosity(before)
