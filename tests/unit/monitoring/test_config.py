"""Loading a monitoring config file: defaults merged with per-model overrides, and one clear `ConfigError`
naming the file and the field for every way a file can be wrong (through `contract.config_files`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelloop.contract.errors import ConfigError
from modelloop.monitoring.config import MonitorConfig, load_monitor_config


def test_defaults_and_overrides_merge_key_by_key(tmp_path: Path) -> None:
    path = tmp_path / "monitoring.yaml"
    path.write_text(
        "defaults:\n  drift: {wasserstein: 0.2}\n  retrain: {consecutive_windows: 4}\n"
        "models:\n  churn:\n    retrain: {quality_floor: 0.8}\n"
    )
    config = load_monitor_config(path)
    churn, other = config.for_model("churn"), config.for_model("fraud")
    assert churn.drift.wasserstein == 0.2 and churn.retrain.consecutive_windows == 4
    assert churn.retrain.quality_floor == 0.8 and other.retrain.quality_floor is None
    assert load_monitor_config(None) == MonitorConfig()
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_monitor_config(empty) == MonitorConfig()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (None, "monitoring config {path} does not exist"),
        ("defaults: [unclosed\n", "monitoring config {path} is not valid YAML (line 2)"),
        ("- a\n- b\n", "monitoring config {path} must be a YAML mapping"),
        ("defaults: {}\nmodel: {}\n", "monitoring config {path}: model: Extra inputs are not permitted"),
        (
            "models:\n  churn:\n    drift: {p_value: 2}\n",
            "monitoring config for model 'churn': drift.p_value: Input should be less than 1",
        ),
        (
            "defaults:\n  drift: {psi_moderate: 0.3, psi_major: 0.2}\n",
            "monitoring config for model '': (top level): Value error, "
            "drift.psi_major must not be below drift.psi_moderate",
        ),
    ],
)
def test_a_wrong_file_names_the_file_and_the_field(tmp_path: Path, text: str | None, message: str) -> None:
    path = tmp_path / "monitoring.yaml"
    if text is not None:
        path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_monitor_config(path)
    assert str(info.value) == message.format(path=path)
