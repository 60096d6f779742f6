"""The port file: where a scoring server tells whoever started it which ports it bound.

`modelloop serve --port-file PATH` writes it (`serving.app`) once every model is loaded and warm, so its
presence means "ready"; the local deployment target (`deploy.local`) waits for it and `modelloop up` reads
the metrics port from it. The format, defined here only, is one JSON object:

    {"grpc": 50051, "metrics": 9100}        # metrics: null when the server exposes no metrics endpoint

It is written atomically (a temporary file in the same directory, then a rename), so a reader sees either
no file or the whole of it; `read_port_file` answers None for a missing, empty or malformed file.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Ports:
    """The ports a scoring server bound: gRPC, and Prometheus metrics when it serves them."""

    grpc: int
    metrics: int | None = None


def write_port_file(path: Path, ports: Ports) -> None:
    """Write `ports` to `path` atomically (a reader never sees half a file); creates the directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump({"grpc": ports.grpc, "metrics": ports.metrics}, fh)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _port(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 65536 else None


def read_port_file(path: Path) -> Ports | None:
    """The ports in the file at `path`; None when it is missing, empty or not a port file."""
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(document, dict):
        return None
    grpc = _port(document.get("grpc"))
    return None if grpc is None else Ports(grpc=grpc, metrics=_port(document.get("metrics")))


__all__ = ["Ports", "read_port_file", "write_port_file"]
