"""`python -m modelloop ...` runs the CLI (used by supervisors that start child processes by interpreter)."""

from modelloop.cli import main

main()
