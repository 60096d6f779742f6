"""Importing the public client loads the wire and nothing of the server: a caller that installs modelloop
to score gets no MLflow, scikit-learn, nor any of modelloop's parts. Checked in a fresh interpreter, so
what other tests imported does not count."""

from __future__ import annotations

import json
import subprocess
import sys

import modelloop.client

#: packages a caller of the client must never load
SERVER_SIDE = (
    "modelloop.serving",
    "modelloop.deploy",
    "modelloop.training",
    "modelloop.monitoring",
    "modelloop.cli",
    "mlflow",
    "sklearn",
)

_PROBE = """
import json, sys
import modelloop.client
from modelloop.client import ScoringClient
print(json.dumps(sorted(sys.modules)))
"""


def _loaded_by_the_client() -> list[str]:
    command = [sys.executable, "-c", _PROBE]
    done = subprocess.run(command, capture_output=True, text=True, check=True, timeout=120)
    modules: list[str] = json.loads(done.stdout)
    return modules


def test_importing_the_client_loads_nothing_of_the_server() -> None:
    modules = _loaded_by_the_client()
    loaded = [m for m in modules if any(m == p or m.startswith(p + ".") for p in SERVER_SIDE)]
    assert loaded == []
    assert "modelloop.contract.wire.codec" in modules  # the probe did import the client


def test_the_documented_names_are_exported() -> None:
    for name in ("ScoringClient", "service_config", "PredictResult", "ModelStatus", "build_request"):
        assert name in modelloop.client.__all__
    assert all(hasattr(modelloop.client, name) for name in modelloop.client.__all__)
    assert modelloop.client.__doc__ and "modelloop.client" in modelloop.client.__doc__
