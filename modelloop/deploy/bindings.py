"""Deployment bindings: what to serve, where, and how big. Loaded from a YAML file by the controller's entry
point (`modelloop controller --bindings FILE`) and by the local platform.

A binding says: serve model M at alias A (the champion), optionally with the version at a challenger alias in
shadow or canary mode, on target `local` or `kubernetes`, with replicas, autoscaling bounds and resources.
MLflow's deprecated stages are honoured: when the alias is missing, the stage mapped to the same role
(`modelloop.contract.registry.STAGE_FOR_ROLE`) is used.

    bindings:
      - name: churn
        model: churn-classifier
        alias: production          # default
        challenger: {alias: challenger, mode: canary, share: 0.1}
        target: kubernetes
        namespace: modelloop
        replicas: 2
        autoscaling: {min: 2, max: 10, cpu_target: 70}
        resources: {requests: {cpu: 250m, memory: 512Mi}, limits: {memory: 1Gi}}

`modelloop bind` edits such a file with `set_binding` / `remove_binding`: validated first, then written whole
(a temporary file renamed over it), so a reader (`modelloop up` watches its file) never sees half of one.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from modelloop.contract.config_files import describe_validation_error, read_yaml_mapping
from modelloop.contract.errors import ConfigError
from modelloop.contract.registry import CHALLENGER_ALIAS, PRODUCTION_ALIAS, STAGE_FOR_ROLE, Role

Quantities = dict[Literal["cpu", "memory"], str]

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$")
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|Ki|Mi|Gi|Ti|M|G|T)?$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Challenger(_Strict):
    """The candidate version served beside the champion."""

    alias: str = Field(default=CHALLENGER_ALIAS, min_length=1, description="Alias naming the challenger.")
    mode: Literal["shadow", "canary"] = Field(
        default="shadow",
        description="shadow: scored off the response path; canary: answers `share` of calls.",
    )
    share: float = Field(default=0.1, gt=0.0, lt=1.0, description="Canary share of calls, 0 < share < 1.")


class Autoscaling(_Strict):
    """HorizontalPodAutoscaler bounds (kubernetes target)."""

    min: int = Field(default=1, ge=1, description="Fewest replicas.")
    max: int = Field(default=3, ge=1, description="Most replicas.")
    cpu_target: int = Field(default=70, ge=1, le=100, description="Average CPU utilisation target, percent.")

    @model_validator(mode="after")
    def _bounds(self) -> Autoscaling:
        if self.max < self.min:
            raise ValueError("autoscaling.max must be at least autoscaling.min")
        return self


def _quantities(**values: str) -> Quantities:
    out: Quantities = {}
    for key in ("cpu", "memory"):
        if key in values:
            out[key] = values[key]
    return out


class Resources(_Strict):
    """Container resources as Kubernetes quantities."""

    requests: Quantities = Field(default_factory=lambda: _quantities(cpu="250m", memory="512Mi"))
    limits: Quantities = Field(default_factory=lambda: _quantities(memory="1Gi"))

    @field_validator("requests", "limits")
    @classmethod
    def _quantities(cls, value: dict[str, str]) -> dict[str, str]:
        for key, quantity in value.items():
            if not _QUANTITY.match(str(quantity)):
                raise ValueError(f"{key} is not a Kubernetes quantity (e.g. 250m, 512Mi)")
        return value


class Binding(_Strict):
    """One thing to serve: model, alias to follow, optional challenger, target and its sizing."""

    name: str = Field(description="Binding name: a DNS label (it names the Kubernetes objects).")
    model: str = Field(min_length=1, description="Registered model name in MLflow.")
    alias: str = Field(default=PRODUCTION_ALIAS, min_length=1, description="Alias naming the champion.")
    challenger: Challenger | None = Field(default=None, description="Optional challenger.")
    target: Literal["local", "kubernetes"] = Field(default="local", description="Where to serve.")
    replicas: int = Field(default=1, ge=1, description="Replicas when autoscaling is off.")
    autoscaling: Autoscaling | None = Field(default=None, description="Autoscaling bounds; off when absent.")
    resources: Resources = Field(default_factory=Resources, description="Container resources.")
    namespace: str = Field(default="default", description="Kubernetes namespace.")

    @field_validator("name", "namespace")
    @classmethod
    def _dns_label(cls, value: str) -> str:
        if not _DNS_LABEL.match(value):
            raise ValueError("must be a DNS label: lower-case letters, digits and '-', at most 40 characters")
        return value

    @property
    def champion_stage(self) -> str:
        """The deprecated stage honoured when the champion alias is missing."""
        return STAGE_FOR_ROLE[Role.CHAMPION]

    @property
    def challenger_stage(self) -> str:
        return STAGE_FOR_ROLE[Role.CHALLENGER]


class BindingsFile(_Strict):
    bindings: list[Binding] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> BindingsFile:
        names = [b.name for b in self.bindings]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"binding names must be unique; repeated: {', '.join(dupes)}")
        return self


def parse_bindings(document: object, *, source: str = "bindings") -> list[Binding]:
    """Validate a parsed YAML document; `ConfigError` names each bad field (never echoes values)."""
    try:
        return list(BindingsFile.model_validate(document).bindings)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {describe_validation_error(exc)}") from None


def load_bindings(path: Path) -> list[Binding]:
    """Read and validate a bindings YAML file (`contract.config_files` reads it)."""
    what = "bindings file"
    return parse_bindings(read_yaml_mapping(path, what=what), source=f"{what} {path}")


def save_bindings(path: Path, bindings: list[Binding]) -> None:
    """Write `bindings` to `path` whole (see the module docstring); no bindings removes the file."""
    path = Path(path)
    if not bindings:
        path.unlink(missing_ok=True)
        return
    BindingsFile(bindings=bindings)  # the unique-name rule
    document = {"bindings": [b.model_dump(mode="json", exclude_defaults=True) for b in bindings]}
    text = "# written by `modelloop bind`; `modelloop up` picks up changes while it runs\n"
    text += yaml.safe_dump(document, sort_keys=False)
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _existing(path: Path) -> list[Binding]:
    return load_bindings(path) if Path(path).exists() else []


def set_binding(path: Path, binding: Binding) -> bool:
    """Add `binding` to the file at `path` (created when missing), or replace the one of the same name;
    True when it replaced one. The file must be valid before: `ConfigError` otherwise, nothing written."""
    bindings = _existing(path)
    replaced = any(b.name == binding.name for b in bindings)
    kept = [binding if b.name == binding.name else b for b in bindings]
    save_bindings(path, kept if replaced else [*bindings, binding])
    return replaced


def remove_binding(path: Path, name: str) -> bool:
    """Remove the binding `name` from the file at `path` (the file goes with its last binding); False when
    there was none of that name."""
    bindings = _existing(path)
    kept = [b for b in bindings if b.name != name]
    if len(kept) == len(bindings):
        return False
    save_bindings(path, kept)
    return True


__all__ = [
    "Autoscaling",
    "Binding",
    "Challenger",
    "Resources",
    "load_bindings",
    "parse_bindings",
    "remove_binding",
    "save_bindings",
    "set_binding",
]
