"""`make help` lists every target of the Makefile, each with what it does."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

MAKEFILE = Path(__file__).resolve().parents[3] / "Makefile"


def targets() -> list[str]:
    """The names of the Makefile's own rules (not variables, not file targets like `$(STAMP)`)."""
    rule = re.compile(r"^([a-zA-Z0-9_-]+):(?!=)")
    return [m.group(1) for line in MAKEFILE.read_text().splitlines() if (m := rule.match(line))]


def test_make_help_lists_every_target() -> None:
    shown = subprocess.run(
        ["make", "-s", "-f", str(MAKEFILE), "help"], capture_output=True, text=True, check=True, timeout=60
    ).stdout.splitlines()
    listed = {line.split()[1]: line.split(None, 2)[2] for line in shown if line.startswith("make ")}
    assert set(listed) == set(targets()), "a target without a `## what it does` comment on its rule line"
    assert all(listed.values())
    assert {"demo", "test", "up", "clean", "test-unit", "bench", "help"} <= set(listed)


def test_every_phony_target_has_a_rule() -> None:
    phony = {
        name
        for line in MAKEFILE.read_text().splitlines()
        if line.startswith(".PHONY:")
        for name in line.split(":", 1)[1].split()
    }
    assert phony <= set(targets()), sorted(phony - set(targets()))
