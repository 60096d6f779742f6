"""`modelloop bind`: add, change or remove a binding in the bindings file `modelloop up` watches, so a model
is served (once its alias names a version) without stopping `up`.

The file is `<data-dir>/bindings.yaml` unless `--bindings` (or `MODELLOOP_BINDINGS_FILE`) names another, as
for `up`. It is validated before and after the edit and replaced whole (`deploy.bindings.set_binding`), so a
running `up` never reads half of it; comments in it are not kept.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from modelloop.cli.errors import reports_errors
from modelloop.cli.options import option
from modelloop.contract.registry import CHALLENGER_ALIAS, PRODUCTION_ALIAS


@click.command(context_settings={"show_default": True})
@click.argument("name")
@option("--model", help="Registered model to serve (its name in MLflow's model registry).")
@option("--alias", default=PRODUCTION_ALIAS, help="Alias naming the version to serve.")
@option(
    "--challenger-mode",
    type=click.Choice(["shadow", "canary"]),
    show_default="no challenger",
    help=f"Also serve the version at alias `{CHALLENGER_ALIAS}`: scored off the response path (shadow) or "
    "answering a share of calls (canary).",
)
@option("--canary-share", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.1,
        help="Share of calls a canary answers.")  # fmt: skip
@option("--target", type=click.Choice(["local", "kubernetes"]), default="local", help="Where to serve.")
@option("--remove", is_flag=True, help="Remove the binding NAME instead.")
@option("--data-dir", type=click.Path(path_type=Path), show_default=".modelloop", help="As for `up`.")
@option(
    "--bindings",
    "bindings_file",
    type=click.Path(path_type=Path),
    show_default="<data-dir>/bindings.yaml",
    help="The bindings file to edit.",
)
@reports_errors
def bind(
    name: str,
    *,
    model: str | None,
    alias: str,
    challenger_mode: str | None,
    canary_share: float,
    target: str,
    remove: bool,
    **flags: Any,
) -> None:
    """Add or change the binding NAME (what to serve) in the bindings file a running `up` watches."""
    from pydantic import ValidationError

    from modelloop.cli.platform import PlatformSettings
    from modelloop.contract.config_files import describe_validation_error
    from modelloop.contract.errors import ConfigError, InvalidInputError
    from modelloop.deploy.bindings import Binding, remove_binding, set_binding

    path = PlatformSettings(**{k: v for k, v in flags.items() if v is not None}).watched_bindings_file()
    if remove:
        if not remove_binding(path, name):
            raise InvalidInputError(f"{path} has no binding named {name[:64]}")
        click.echo(f"removed binding {name} from {path}")
        return
    if model is None:
        raise InvalidInputError("give --model: the registered model the binding serves")
    document: dict[str, Any] = {"name": name, "model": model, "alias": alias, "target": target}
    if challenger_mode is not None:
        document["challenger"] = {"mode": challenger_mode, "share": canary_share}
    try:
        binding = Binding.model_validate(document)
    except ValidationError as exc:
        raise ConfigError(f"binding: {describe_validation_error(exc)}") from None
    replaced = set_binding(path, binding)
    click.echo(
        f"{'changed' if replaced else 'added'} binding {name}: {model} at alias {alias}, in {path} "
        "(a running `modelloop up` applies it now)"
    )


__all__ = ["bind"]
