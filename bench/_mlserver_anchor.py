"""MLServer 1.7.1 with adaptive batching, the batching anchor `bench/serving.py` measures in the same run.

MLServer is not a project dependency: the bench installs it into its own virtual environment under
`.cache/bench/mlserver-venv` (`mlserver==1.7.1`, `mlserver-sklearn==1.7.1`, `uvloop==0.21.0` since 0.22+
kills its inference worker, and scikit-learn and numpy at the versions the model was trained and pickled
with). Any step that fails raises `MlserverUnavailableError`: the bench then says so and exits non-zero, it
never quotes a figure it did not measure.

Its scikit-learn runtime loads joblib/pickle files only, while the registered model is skops: the bench loads
the registered version through MLflow (skops, with the trusted types the model was logged with) and dumps that
same fitted pipeline to `model.joblib`, which `parameters.uri` points at. The runtime accepts one input
tensor only, so it is sent the matrix form (one `[1, 30]` FP64 tensor) over gRPC (OIP v2).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

PINS = ("mlserver==1.7.1", "mlserver-sklearn==1.7.1", "uvloop==0.21.0")
MAX_BATCH_SIZE = 32
MAX_BATCH_TIME_S = 0.002
#: inference workers: 1 is MLServer's default (one worker process beside the front end, both on core 0)
PARALLEL_WORKERS = int(os.environ.get("BENCH_MLSERVER_WORKERS", "1"))


class MlserverUnavailableError(RuntimeError):
    """MLServer could not be installed, configured or started."""


def venv_dir(root: Path) -> Path:
    return root / ".cache" / "bench" / "mlserver-venv"


def requirements() -> list[str]:
    """The pins, with scikit-learn and numpy at this environment's versions (the model's)."""
    sklearn = importlib.metadata.version("scikit-learn")
    numpy = importlib.metadata.version("numpy")
    return [*PINS, f"scikit-learn=={sklearn}", f"numpy=={numpy}"]


def ensure_venv(root: Path) -> Path:
    """The virtual environment's bin folder, installed (or brought to the pins) when needed."""
    venv = venv_dir(root)
    bin_dir = venv / "bin"
    stamp = venv / ".bench-requirements"
    wanted = "\n".join(requirements()) + "\n"
    if stamp.exists() and stamp.read_text() == wanted and (bin_dir / "mlserver").exists():
        return bin_dir
    print(f"  MLServer: installing {' '.join(requirements())} into {venv}", flush=True)
    if not (bin_dir / "python").exists():
        shutil.rmtree(venv, ignore_errors=True)
        venv.parent.mkdir(parents=True, exist_ok=True)
        _run([sys.executable, "-m", "venv", str(venv)], "create its virtual environment")
    _run([str(bin_dir / "python"), "-m", "pip", "install", "-q", *requirements()], "pip install")
    probe = (
        "import mlserver, mlserver_sklearn, uvloop, sklearn; print(mlserver.__version__, uvloop.__version__)"
    )
    versions = _run([str(bin_dir / "python"), "-c", probe], "import mlserver").split()
    if versions != ["1.7.1", "0.21.0"]:
        raise MlserverUnavailableError(f"MLServer venv has mlserver/uvloop {versions}, not 1.7.1/0.21.0")
    stamp.write_text(wanted)
    return bin_dir


def _run(cmd: list[str], what: str) -> str:
    try:
        done = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise MlserverUnavailableError(f"could not {what}: {exc}") from None
    if done.returncode != 0:
        tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
        raise MlserverUnavailableError(f"could not {what} (exit {done.returncode}): {tail}")
    return done.stdout


def write_repository(folder: Path, name: str, version: str, model: Any, ports: dict[str, int]) -> Path:
    """A model repository for `mlserver start`: settings.json, NAME/model-settings.json, NAME/model.joblib."""
    import joblib

    model_dir = folder / name
    model_dir.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, model_dir / "model.joblib")
    settings = {
        "debug": False,  # no per-call INFO log
        "host": "127.0.0.1",
        "grpc_port": ports["grpc"],
        "http_port": ports["http"],
        "metrics_port": ports["metrics"],
        "parallel_workers": PARALLEL_WORKERS,
    }
    (folder / "settings.json").write_text(json.dumps(settings))
    model_settings = {
        "name": name,
        "implementation": "mlserver_sklearn.SKLearnModel",
        "max_batch_size": MAX_BATCH_SIZE,
        "max_batch_time": MAX_BATCH_TIME_S,
        "parameters": {"uri": str(model_dir / "model.joblib"), "version": version},
    }
    (model_dir / "model-settings.json").write_text(json.dumps(model_settings))
    return folder


def env(bin_dir: Path, base: dict[str, str]) -> dict[str, str]:
    """The server's environment: its own venv first on PATH, none of the project's PYTHONPATH."""
    out = {k: v for k, v in base.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    out["PATH"] = os.pathsep.join([str(bin_dir), base.get("PATH", "")])
    out["OMP_NUM_THREADS"] = "1"
    return out


def ready(http_port: int, name: str) -> bool:
    url = f"http://127.0.0.1:{http_port}/v2/models/{name}/ready"
    return bool(urllib.request.urlopen(url, timeout=2).status == 200)


def calls_by_code(metrics_port: int) -> dict[str, float]:
    """ModelInfer calls so far by gRPC status code from its `grpc_server_handled_total` (empty: absent)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
    counts: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("grpc_server_handled_total{") and 'grpc_method="ModelInfer"' in line:
            label = 'grpc_code="' if 'grpc_code="' in line else 'code="'  # py-grpc-prometheus legacy: code
            code = line.split(label, 1)[1].split('"', 1)[0] if label in line else "UNKNOWN"
            counts[code] = counts.get(code, 0.0) + float(line.rsplit(" ", 1)[1])
    return counts
