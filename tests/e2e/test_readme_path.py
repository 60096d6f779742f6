"""The README's "Run the loop yourself" path, run as written: the commands are read from README.md itself (the
fenced blocks after a `<!-- readme-path: KIND -->` marker), so the README and this test cannot drift apart.

Real processes throughout: `modelloop up` (its own MLflow server, controller, scoring servers) in the
background, then each command of the `commands` block in a shell, then the `python` block with the real
client, which must print a prediction of version 1. The only changes made to the README's text are where
things live: `.venv/bin/` is this environment's, port 5000 a free one, `<port>` the one `up` printed; the
working directory is a temporary one holding `examples/`.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from modelloop.deploy.mlflow_server import free_port

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
VENV_BIN = Path(sys.executable).parent
MARKER = re.compile(r"<!-- readme-path: (\w+)[^>]*-->\s*\n```[a-z]*\n(.*?)\n```", re.DOTALL)


def readme_blocks(text: str) -> dict[str, str]:
    """Marked block kind -> its content (each kind once)."""
    blocks: dict[str, str] = {}
    for kind, body in MARKER.findall(text):
        assert kind not in blocks, f"two README blocks marked {kind}"
        blocks[kind] = body
    return blocks


def shell_commands(block: str) -> list[str]:
    """The command lines of a shell block (comment lines and blank lines left out)."""
    return [line for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def localise(text: str, mlflow_port: int) -> str:
    """The README's text with this environment's venv and a free MLflow port (see the module docstring)."""
    assert ".venv/bin/" in text or "<port>" in text, "a README command no longer names .venv/bin/"
    text = text.replace(".venv/bin/", f"{VENV_BIN}/")
    return text.replace("--mlflow-port 5000", f"--mlflow-port {mlflow_port}").replace(
        "127.0.0.1:5000", f"127.0.0.1:{mlflow_port}"
    )


@dataclass
class Background:
    """A background process whose stdout lines are collected as they come."""

    proc: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, pattern: str, *, limit: float) -> re.Match[str]:
        """The first printed line matching `pattern`; fails when the process exits or `limit` seconds pass
        first (a bound on a hang, not a timing requirement)."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            for line in list(self.lines):
                found = re.search(pattern, line)
                if found:
                    return found
            if self.proc.poll() is not None:
                raise AssertionError(f"`up` exited ({self.proc.returncode}) before printing {pattern!r}")
            time.sleep(0.2)
        raise AssertionError(f"`up` printed nothing matching {pattern!r}: {self.lines}")


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A fresh working directory holding the repository's `examples/` (the README's paths are relative)."""
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    return tmp_path


@pytest.fixture
def environment() -> dict[str, str]:
    """The environment of a newcomer's shell: no tracking URI or modelloop settings of the test run's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODELLOOP_", "MLFLOW_TRACKING_URI"))}
    env["OMP_NUM_THREADS"] = "1"
    return env


@pytest.fixture
def up(workdir: Path, environment: dict[str, str]) -> Iterator[tuple[Background, int, Path]]:
    """The README's background command (`modelloop up`), running; Ctrl-C at the end must stop it cleanly."""
    blocks = readme_blocks(README.read_text(encoding="utf-8"))
    assert set(blocks) == {"background", "commands", "python"}, sorted(blocks)
    (command,) = shell_commands(blocks["background"])
    assert "--mlflow-port 5000" in command
    port = free_port()
    log = workdir / "up.log"
    with log.open("w") as stderr:
        proc = subprocess.Popen(
            ["bash", "-c", f"exec {localise(command, port)}"],
            cwd=workdir,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            start_new_session=True,
        )
    running = Background(proc)
    try:
        yield running, port, log
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, log.read_text()[-3000:]


def test_the_readme_path_ends_with_a_prediction(
    up: tuple[Background, int, Path], workdir: Path, environment: dict[str, str]
) -> None:
    platform, port, log = up
    blocks = readme_blocks(README.read_text(encoding="utf-8"))
    platform.wait_for(rf"MLflow API\s+http://127\.0\.0\.1:{port}", limit=180)

    commands = shell_commands(blocks["commands"])
    bound = [m for c in commands if (m := re.search(r"modelloop bind (\S+) --model (\S+)", c))]
    assert bound, "the README's commands add no binding"
    binding, model = bound[0].groups()
    for command in commands:
        done = subprocess.run(
            ["bash", "-c", localise(command, port)],
            cwd=workdir,
            env=environment,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        assert done.returncode == 0, f"{command}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"

    served = platform.wait_for(
        rf"binding {binding} \({model}\)\s+gRPC (127\.0\.0\.1:(\d+))\s+version (\S+)", limit=300
    )
    assert served.group(3) == "1"
    # the states `up` printed for the binding never went back: nothing says "waiting" once a rollout began
    states = [line for line in platform.lines if line.startswith(f"binding {binding} ")]
    began = next(i for i, line in enumerate(states) if "rolling out" in line or "gRPC" in line)
    assert not [line for line in states[began:] if "waiting" in line], states

    script = blocks["python"]
    assert "<port>" in script
    done = subprocess.run(
        [str(VENV_BIN / "python"), "-c", localise(script, port).replace("<port>", served.group(2))],
        cwd=workdir,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    version, rest = done.stdout.strip().split(" ", 1)
    assert version == "1" and rest.startswith("["), done.stdout

    # the controller's own tag writes come back as webhook deliveries: none of them is a log line
    assert "webhook model_version_tag.set" not in log.read_text()
