"""A model reference as users write it: `NAME@ALIAS` or `NAME/VERSION`.

Parsed by the scoring server (`modelloop serve --model`, `--challenger`) and by batch scoring (`modelloop
score --model`), so both load exactly the same version for the same text. As in MLflow's `models:/` URIs the
alias follows the last `@` and the version the last `/` (a name may hold `/`, an alias never holds `@`).
"""

from __future__ import annotations

from modelloop.contract.errors import ConfigError


def parse_model_ref(value: str) -> tuple[str, str]:
    """`NAME@ALIAS` or `NAME/VERSION` -> (name, alias or version); `ConfigError` otherwise."""
    shown = value[:80]
    name, sep, ref = value.rpartition("@")
    if not sep:
        name, sep, ref = value.rpartition("/")
        if sep and name and ref and not ref.isdigit():
            raise ConfigError(f"model reference {shown!r}: the version after '/' must be a number")
    if not sep or not name or not ref:
        raise ConfigError(f"model reference {shown!r}: expected NAME@ALIAS or NAME/VERSION")
    return name, ref


__all__ = ["parse_model_ref"]
