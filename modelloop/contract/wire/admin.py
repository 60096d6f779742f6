"""What the admin service (`modelloop.admin.v1.ModelAdmin`) says about a hosted model, as a plain value.

`ModelStatus` is returned by the scoring server's model host (`serving.hosting`) and by the client's
`load_model` and `list_models`; `to_message` and `from_message` convert it to and from the admin proto's
`ModelStatus`, the one place where the empty strings of proto3 become None and back.
"""

from __future__ import annotations

from dataclasses import dataclass

from modelloop.contract.wire._generated.modelloop.admin.v1 import admin_pb2 as admin_pb


@dataclass(frozen=True)
class ModelStatus:
    """A hosted model: its champion version, its challenger (None when there is none) and how the challenger
    is served (`mode`: shadow or canary, with `canary_share` of the traffic), and whether it answers."""

    name: str
    champion_version: str
    challenger_version: str | None
    mode: str | None
    canary_share: float
    ready: bool


def to_message(status: ModelStatus) -> admin_pb.ModelStatus:
    """The admin proto's `ModelStatus` for `status`."""
    return admin_pb.ModelStatus(
        name=status.name,
        champion_version=status.champion_version,
        challenger_version=status.challenger_version or "",
        mode=status.mode or "",
        canary_share=status.canary_share,
        ready=status.ready,
    )


def from_message(message: admin_pb.ModelStatus) -> ModelStatus:
    """The `ModelStatus` an admin proto message describes."""
    return ModelStatus(
        name=message.name,
        champion_version=message.champion_version,
        challenger_version=message.challenger_version or None,
        mode=message.mode or None,
        canary_share=message.canary_share,
        ready=message.ready,
    )


__all__ = ["ModelStatus", "from_message", "to_message"]
