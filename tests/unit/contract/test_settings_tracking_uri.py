"""Where every command's settings take the MLflow tracking URI from: the flag, else MODELLOOP_TRACKING_URI,
else MLflow's MLFLOW_TRACKING_URI, else the default; MLflow's credential and TLS variables are left alone."""

from __future__ import annotations

import os

import pytest

from modelloop.cli.platform import PlatformSettings
from modelloop.contract.settings import DEFAULT_TRACKING_URI, CommonSettings
from modelloop.deploy.settings import ControllerSettings
from modelloop.monitoring.settings import MonitorSettings
from modelloop.serving.settings import ServeSettings

EVERY_COMMAND = [CommonSettings, ServeSettings, ControllerSettings, MonitorSettings, PlatformSettings]
FLAG = "http://flag:1"
OURS = "http://modelloop-env:2"
MLFLOWS = "https://mlflow-env:3/prefix"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper() == "MODELLOOP_TRACKING_URI" or name.startswith("MLFLOW_TRACKING_"):
            monkeypatch.delenv(name)


@pytest.mark.parametrize("settings_cls", EVERY_COMMAND, ids=lambda c: c.__name__)
@pytest.mark.parametrize(
    ("flag", "modelloop_env", "mlflow_env", "expected"),
    [
        (None, None, None, DEFAULT_TRACKING_URI),
        (None, None, MLFLOWS, MLFLOWS),
        (None, OURS, MLFLOWS, OURS),
        (None, OURS, None, OURS),
        (FLAG, OURS, MLFLOWS, FLAG),
        (FLAG, None, MLFLOWS, FLAG),
        (None, "", MLFLOWS, MLFLOWS),  # an empty variable counts as unset, as MLflow counts it
        (None, "", "", DEFAULT_TRACKING_URI),
        (None, None, "  ", DEFAULT_TRACKING_URI),
    ],
)
def test_precedence(
    monkeypatch: pytest.MonkeyPatch,
    settings_cls: type[CommonSettings],
    flag: str | None,
    modelloop_env: str | None,
    mlflow_env: str | None,
    expected: str,
) -> None:
    if modelloop_env is not None:
        monkeypatch.setenv("MODELLOOP_TRACKING_URI", modelloop_env)
    if mlflow_env is not None:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_env)
    settings = settings_cls(tracking_uri=flag) if flag is not None else settings_cls()
    assert settings.tracking_uri == expected


def test_the_prefix_is_case_insensitive_like_the_other_modelloop_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("modelloop_tracking_uri", OURS)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", MLFLOWS)
    assert CommonSettings().tracking_uri == OURS


def test_mlflow_credentials_and_tls_variables_are_left_to_mlflow(monkeypatch: pytest.MonkeyPatch) -> None:
    variables = {
        "MLFLOW_TRACKING_URI": MLFLOWS,
        "MLFLOW_TRACKING_USERNAME": "user",
        "MLFLOW_TRACKING_PASSWORD": "pw-8d1f",
        "MLFLOW_TRACKING_TOKEN": "tok-42ab",
        "MLFLOW_TRACKING_INSECURE_TLS": "false",
        "MLFLOW_TRACKING_SERVER_CERT_PATH": "/etc/ssl/ca.pem",
        "MLFLOW_TRACKING_CLIENT_CERT_PATH": "/etc/ssl/client.pem",
    }
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    before = dict(os.environ)
    settings = ServeSettings(tracking_uri=FLAG)
    assert dict(os.environ) == before  # nothing set, nothing removed
    dumped = settings.model_dump_json()
    assert "pw-8d1f" not in dumped and "tok-42ab" not in dumped  # not copied into modelloop's settings

    from mlflow.utils.credentials import get_default_host_creds

    creds = get_default_host_creds(settings.tracking_uri)  # what MLflow's client uses for the URI we pass
    assert (creds.host, creds.username, creds.password, creds.token) == (FLAG, "user", "pw-8d1f", "tok-42ab")
    assert creds.server_cert_path == "/etc/ssl/ca.pem" and creds.client_cert_path == "/etc/ssl/client.pem"
