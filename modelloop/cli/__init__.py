"""The `modelloop` command line: the top layer, and the one place that wires the parts together.

Each command lives in its own module here and is imported only when it runs, so `modelloop --help` stays
fast and one part's heavy imports (MLflow, gRPC, Kubernetes) never slow another's command.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys

import click

#: command name -> "module:attribute" of its click command
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("modelloop.cli.train:train", "Tune, record and register a model from a training config."),
    "serve": ("modelloop.cli.serve:serve", "Run the gRPC scoring server (Open Inference Protocol v2)."),
    "monitor": ("modelloop.cli.monitor:monitor", "Measure drift and quality for a window; maybe retrain."),
    "feedback": ("modelloop.cli.feedback:feedback", "Record ground-truth labels for logged predictions."),
    "controller": ("modelloop.cli.controller:controller", "Reconcile deployment bindings with the registry."),
    "webhook": ("modelloop.cli.webhook:webhook", "Register the controller's webhook in MLflow."),
    "up": ("modelloop.cli.up:up", "Start the whole local platform and keep it running."),
    "bind": ("modelloop.cli.bind:bind", "Add or change what a running `up` serves (its bindings file)."),
    "score": ("modelloop.cli.score:score", "Score a table (Parquet, CSV, SQL) with a registered version."),
    "profile": ("modelloop.cli.profile:profile", "Attach a reference profile to a version logged elsewhere."),
    "demo": ("modelloop.cli.demo:demo", "Run the whole loop on this machine and report what happened."),
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(name for name, (target, _) in COMMANDS.items() if _available(target))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = COMMANDS.get(cmd_name)
        if entry is None or not _available(entry[0]):
            return None
        module_name, attr = entry[0].split(":")
        command = getattr(importlib.import_module(module_name), attr)
        assert isinstance(command, click.Command)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][1]) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def _available(target: str) -> bool:
    module_name = target.split(":", maxsplit=1)[0]
    return importlib.util.find_spec(module_name) is not None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="modelloop")
def cli() -> None:
    """modelloop: tune with Optuna, record in MLflow, promote by alias, serve over gRPC, watch drift,
    retrain."""
    # modelloop prints its own links and progress; MLflow's per-run URL lines and artifact progress bars
    # would bury them (child processes inherit these)
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def main() -> None:
    """Console-script entry point."""
    sys.exit(cli.main(standalone_mode=True))


__all__ = ["COMMANDS", "cli", "main"]
