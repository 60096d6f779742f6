"""The CLI's shared options: one duration format everywhere, defaults shown one way, `--log-level` on every
long-running command."""

from __future__ import annotations

import re

import click
import pytest
from click.testing import CliRunner

from modelloop.cli import cli
from modelloop.cli.options import DURATION, DURATION_OR_ZERO
from modelloop.cli.platform import PlatformSettings
from modelloop.contract.durations import format_duration, parse_duration
from modelloop.contract.errors import InvalidInputError

LONG_RUNNING = ["up", "serve", "controller", "demo", "train"]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("12s", 12.0),
        ("15m", 900.0),
        ("1h", 3600.0),
        ("2d", 172800.0),
        ("90", 90.0),
        ("2.5", 2.5),
        (" 5 m ", 300.0),
    ],
)
def test_durations_read_one_way(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds
    assert DURATION.convert(text, None, None) == seconds


@pytest.mark.parametrize("text", ["", "m", "15 minutes", "-5s", "0", "1e3", "nan", "inf", "secret-token"])
def test_bad_durations_are_refused_without_echoing(text: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        parse_duration(text)
    message = str(caught.value)
    assert "e.g. 12s, 15m, 1h" in message
    # one of two fixed messages: nothing of the input is in it
    assert message.startswith(("a duration is a number with an optional unit", "a duration must be finite"))


def test_zero_only_where_allowed() -> None:
    assert DURATION_OR_ZERO.convert("0", None, None) == 0.0
    with pytest.raises(click.BadParameter):
        DURATION.convert("0s", None, None)


@pytest.mark.parametrize(
    ("seconds", "text"), [(900, "15m"), (30, "30s"), (5400, "90m"), (1.5, "1.5s"), (86400, "1d")]
)
def test_durations_written_back_shortest(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == seconds


def test_settings_take_durations_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELLOOP_MONITOR_WINDOW", "15m")
    monkeypatch.setenv("MODELLOOP_POLL_INTERVAL", "45")
    settings = PlatformSettings()
    assert (settings.monitor_window, settings.poll_interval) == (900.0, 45.0)


def test_a_bad_duration_flag_names_the_flag() -> None:
    result = CliRunner().invoke(cli, ["demo", "--window", "soon"])
    assert result.exit_code == 2
    assert "--window" in result.output and "e.g. 12s, 15m, 1h" in result.output


def _help(command: str) -> str:
    result = CliRunner().invoke(cli, [command, "--help"], terminal_width=400)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("command", LONG_RUNNING)
def test_long_running_commands_take_log_level(command: str) -> None:
    assert re.search(r"--log-level \[DEBUG\|INFO\|WARNING\|ERROR\]", _help(command))


@pytest.mark.parametrize("command", [*LONG_RUNNING, "bind"])
def test_defaults_are_shown_one_way(command: str) -> None:
    text = _help(command)
    assert "(default" not in text  # never "(default 30)" in the help text itself
    assert "[default: (" not in text  # never click's parenthesised form
    for duration in re.findall(r"DURATION .*?\[default: ([^;\]]+)", text):
        assert parse_duration(duration) > 0  # durations shown as they are typed: 30s, 15m


def test_up_shows_its_real_defaults() -> None:
    text = _help("up")
    for flag, default in [
        ("--poll-interval", "30s"),
        ("--monitor-interval", "5m"),
        ("--monitor-window", "15m"),
    ]:
        assert re.search(rf"{flag} DURATION .*\[default: {default}\]", text), flag
    assert "[default: 5000;" in text


def test_tracking_uri_says_what_it_falls_back_to() -> None:
    for command in ["train", "serve", "controller"]:
        assert (
            "[default: $MODELLOOP_TRACKING_URI, else $MLFLOW_TRACKING_URI, else http://127.0.0.1:5000]"
            in (_help(command))
        )
