"""Reading a YAML config file, and describing a pydantic validation failure, the same way everywhere.

Every config modelloop reads (training configs, bindings, monitoring configs, the retraining Job template)
goes through `read_yaml_mapping`, so a missing file, an unreadable one, invalid YAML and a document that is
not a mapping each give one clear `ConfigError` naming the file (and the line, for YAML errors), never the
file's content. `describe_validation_error` names each bad field and the problem, never the value.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from .errors import ConfigError


def parse_yaml_mapping(text: str, *, what: str) -> dict[str, Any]:
    """The mapping a YAML text holds (an empty document is an empty mapping); `what` names the source in
    errors (e.g. "bindings file /etc/x.yaml")."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"{what} is not valid YAML{where}") from None
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise ConfigError(f"{what} must be a YAML mapping")
    return document


def read_yaml_mapping(path: Path, *, what: str) -> dict[str, Any]:
    """`parse_yaml_mapping` of the file at `path`; `what` names its kind (e.g. "bindings file")."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"{what} {path} cannot be read ({exc.strerror})") from None
    return parse_yaml_mapping(text, what=f"{what} {path}")


def describe_validation_error(exc: ValidationError, *, limit: int | None = None) -> str:
    """`field.path: problem; ...` for each error (at most `limit`, then how many more), never the input."""
    errors = exc.errors(include_input=False, include_url=False)
    shown = errors if limit is None else errors[:limit]
    parts = [f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}" for err in shown]
    more = len(errors) - len(shown)
    return "; ".join(parts) + (f" (and {more} more problem(s))" if more > 0 else "")


def read_secret_file(path: Path, *, what: str) -> str:
    """The secret a file holds (surrounding whitespace stripped); `ConfigError` naming the file, never its
    content, when it cannot be read or is empty. `what` names its kind (e.g. "webhook secret file")."""
    try:
        secret = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from None
    if not secret:
        raise ConfigError(f"{what} {path} is empty")
    return secret


__all__ = ["describe_validation_error", "parse_yaml_mapping", "read_secret_file", "read_yaml_mapping"]
