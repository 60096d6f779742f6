"""The local target's swap policy: how a running scoring server is moved from one deployment spec to another
through its admin service, so that no call fails and a version that cannot load never replaces one that
serves.

Used by `deploy.local.LocalTarget` (promotions, joins to a shared server) and `deploy.local_process` (the
challengers a shared server's command line cannot carry). `AdminClient` is the part of the scoring client
(`ScoringClient`) these steps use; `deploy.local` hands in the real client.
"""

from __future__ import annotations

import contextlib
from typing import Protocol

from modelloop.contract.errors import ModelloopError

from .target import DeploymentSpec


class AdminClient(Protocol):
    """What the local target asks of a scoring server: readiness, and hot swap through the admin service.
    Errors are `ModelloopError`s (`UnavailableError` when the server cannot be reached)."""

    def ready(self, model: str, *, version: str | None = None, timeout: float = 5.0) -> bool:
        """Whether the server answers for `model`."""
        ...

    def load_model(
        self,
        model: str,
        version: str,
        *,
        role: str = "champion",
        mode: str | None = None,
        canary_share: float | None = None,
        timeout: float = 120.0,
    ) -> object:
        """Load `version` beside what serves, warm it, switch to it; what served keeps serving on error."""
        ...

    def unload_model(self, model: str, *, role: str = "champion", timeout: float = 30.0) -> None:
        """Stop serving `model` in `role`."""
        ...

    def close(self) -> None:
        """Close the channel."""
        ...


def swap(client: AdminClient, old: DeploymentSpec | None, new: DeploymentSpec, deadline: float) -> None:
    """Hot-swap a running server from `old` (None: the model is not loaded yet) to `new`; on failure what
    served before still serves (the champion is put back when the challenger step fails)."""
    champion_changed = old is None or new.champion_version != old.champion_version
    if champion_changed:
        client.load_model(new.model, new.champion_version, role="champion", timeout=deadline)
    try:
        swap_challenger(client, old, new, deadline)
    except ModelloopError:
        if champion_changed and old is not None:  # put the champion back too
            client.load_model(old.model, old.champion_version, role="champion", timeout=deadline)
        raise


def swap_challenger(
    client: AdminClient, old: DeploymentSpec | None, new: DeploymentSpec, deadline: float
) -> None:
    """Load `new`'s challenger when it (or its mode or share) differs from `old`'s; unload it when `new` has
    none and `old` had one."""
    before = (None, None, None) if old is None else (old.challenger_version, old.mode, old.canary_share)
    if new.challenger_version is not None:
        if (new.challenger_version, new.mode, new.canary_share) != before:
            client.load_model(
                new.model,
                new.challenger_version,
                role="challenger",
                mode=new.mode,
                canary_share=new.canary_share,
                timeout=deadline,
            )
    elif before[0] is not None:
        client.unload_model(new.model, role="challenger")


def unload_quietly(client: AdminClient, model: str) -> None:
    """Take a model (challenger, then champion) out of a server, ignoring what was not loaded."""
    for role in ("challenger", "champion"):
        with contextlib.suppress(ModelloopError):
            client.unload_model(model, role=role)


__all__ = ["AdminClient", "swap", "swap_challenger", "unload_quietly"]
