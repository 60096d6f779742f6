"""The hosted models: per model name a champion version, optionally a challenger (shadow or canary), each
with its own batcher. Hot swap and routing live here.

Called by `serving.core` (`route`) for every request, by the gRPC adapter (`ready`, `describe`, `list`) and
by the admin servicer and `serving.app` (`load`, `unload`); what it reports of a model is the wire's
`ModelStatus` (`contract.wire.admin`). A load runs in a worker thread (download, build, warm up) while the
old version keeps serving; then the slot switches atomically (a plain attribute swap on the event loop,
between two requests) and the old version's batcher drains its queued requests before it is released. No
request is dropped or fails. `prepare` and `commit` are the two halves of `load`, for several worker processes
that swap together (`serving.workers`: every worker prepares, then every worker commits).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal, Protocol

from modelloop.contract.errors import ConfigError, NotFoundError
from modelloop.contract.registry import Role, Route
from modelloop.contract.wire.admin import ModelStatus

from .batcher import AfterBatch, Batcher
from .errors import NotReadyError, clip
from .metrics import ServingMetrics
from .model_host import LoadedModel

log = logging.getLogger(__name__)

Mode = Literal["shadow", "canary"]
MODES: tuple[str, ...] = ("shadow", "canary")


@dataclass
class Deployment:
    """One loaded version and its batcher."""

    model: LoadedModel
    batcher: Batcher

    @property
    def version(self) -> str:
        return self.model.version


@dataclass
class ModelSlot:
    name: str
    champion: Deployment
    challenger: Deployment | None = None
    mode: Mode | None = None
    canary_share: float = 0.0


@dataclass(frozen=True)
class ModelDescription:
    """What a metadata call tells about a hosted model: the versions it serves (champion first) and the loaded
    version asked for (the champion when none was named)."""

    name: str
    versions: tuple[str, ...]
    model: LoadedModel


@dataclass(frozen=True)
class BatchingConfig:
    max_batch_size: int = 64
    max_wait: float = 0.001
    max_queue: int = 10_000
    max_idle: float | None = None  # None: only max_wait closes a batch early


@dataclass(frozen=True)
class PendingLoad:
    """A load asked for, and once `ModelHost.prepare` ran, the version loaded and warm but not serving yet
    (`loaded` None: that version serves already; a challenger then only takes the new mode and share)."""

    name: str
    version: str
    role: Role
    mode: Mode | None
    share: float
    loaded: LoadedModel | None = None


Loader = Callable[[str, str], LoadedModel]
#: makes the after-batch hook (prediction logging) of a loaded version
HookFactory = Callable[[LoadedModel], AfterBatch | None]


class ModelAdmin(Protocol):
    """What the admin service drives: this process's `ModelHost`, or with several worker processes every
    worker's (`serving.workers.WorkerAdmin`: the call returns once every worker serves the outcome)."""

    async def load(
        self,
        name: str,
        version: str,
        *,
        role: Role = Role.CHAMPION,
        mode: str | None = None,
        canary_share: float | None = None,
    ) -> ModelStatus: ...

    async def unload(self, name: str, *, role: Role = Role.CHAMPION) -> None: ...


class ModelHost:
    """Every hosted model (see the module docstring). Used from one event loop."""

    def __init__(
        self,
        loader: Loader,
        *,
        metrics: ServingMetrics,
        batching: BatchingConfig = BatchingConfig(),
        hooks: HookFactory | None = None,
        seed: int | None = None,
    ) -> None:
        self._loader = loader
        self._metrics = metrics
        self._batching = batching
        self._hooks = hooks
        self._slots: dict[str, ModelSlot] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._rng = random.Random(seed)  # noqa: S311 (traffic split, not security)

    # requests ---------------------------------------------------------------------------------------------

    def slot(self, name: str) -> ModelSlot:
        slot = self._slots.get(name)
        if slot is None:
            raise NotFoundError(f"model {clip(name)} is not served here")
        return slot

    def route(self, name: str, version: str = "") -> tuple[Deployment, Route, Deployment | None]:
        """Who answers a request: (deployment, its route, shadow deployment or None)."""
        slot = self.slot(name)
        challenger = slot.challenger
        if version:
            if version == slot.champion.version:
                return slot.champion, Route.CHAMPION, None
            if challenger is not None and version == challenger.version:
                return challenger, Route.CHALLENGER, None
            raise NotFoundError(f"model {clip(name)} has no version {clip(version)} served here")
        if challenger is None:
            return slot.champion, Route.CHAMPION, None
        if slot.mode == "shadow":
            return slot.champion, Route.CHAMPION, challenger
        if self._rng.random() < slot.canary_share:
            return challenger, Route.CHALLENGER, None
        return slot.champion, Route.CHAMPION, None

    def has(self, name: str) -> bool:
        return name in self._slots

    def names(self) -> list[str]:
        return sorted(self._slots)

    def ready(self, name: str, version: str = "") -> bool:
        slot = self._slots.get(name)
        if slot is None:
            return False
        return not version or version in {slot.champion.version, slot.challenger and slot.challenger.version}

    def status(self, name: str) -> ModelStatus:
        s = self.slot(name)
        return ModelStatus(
            name=name,
            champion_version=s.champion.version,
            challenger_version=s.challenger.version if s.challenger else None,
            mode=s.mode if s.challenger else None,
            canary_share=s.canary_share if s.challenger else 0.0,
            ready=True,
        )

    def describe(self, name: str, version: str = "") -> ModelDescription:
        """The served versions of `name` and the loaded `version` (NotFoundError for one not served here)."""
        slot = self.slot(name)
        deployment, _, _ = self.route(name, version or slot.champion.version)
        challenger = (slot.challenger.version,) if slot.challenger else ()
        return ModelDescription(name, (slot.champion.version, *challenger), deployment.model)

    def list(self) -> list[ModelStatus]:
        return [self.status(n) for n in self.names()]

    # loading ----------------------------------------------------------------------------------------------

    async def load(
        self,
        name: str,
        version: str,
        *,
        role: Role = Role.CHAMPION,
        mode: str | None = None,
        canary_share: float | None = None,
    ) -> ModelStatus:
        """Load `version` for `role`, warm it, switch to it, drain the old one (see the module docstring)."""
        request = self._checked(name, version, role, mode, canary_share)
        async with self._locks.setdefault(name, asyncio.Lock()):
            return await self._switch(await self._load(request))

    async def prepare(
        self,
        name: str,
        version: str,
        *,
        role: Role = Role.CHAMPION,
        mode: str | None = None,
        canary_share: float | None = None,
    ) -> PendingLoad:
        """The first half of `load`: load and warm `version` beside what serves, switch nothing. Worker
        processes swap together with it (`serving.workers`): each prepares, then each `commit`s. The caller
        serialises prepare/commit pairs of one model (the workers' supervisor does)."""
        return await self._load(self._checked(name, version, role, mode, canary_share))

    async def commit(self, pending: PendingLoad) -> ModelStatus:
        """The second half of `load`: switch to what `prepare` loaded, drain the old version."""
        async with self._locks.setdefault(pending.name, asyncio.Lock()):
            return await self._switch(pending)

    def _checked(
        self, name: str, version: str, role: Role, mode: str | None, canary_share: float | None
    ) -> PendingLoad:
        """A load request with its challenger mode and share checked (nothing loaded yet)."""
        share = 0.0
        if role == Role.CHALLENGER:
            mode = mode or "shadow"
            if mode not in MODES:
                raise ConfigError(f"challenger mode must be shadow or canary, not '{clip(mode)}'")
            share = 0.1 if canary_share is None else float(canary_share)
            if not 0.0 <= share <= 1.0:
                raise ConfigError("canary share must be between 0 and 1")
            if name not in self._slots:
                raise NotFoundError(f"model {clip(name)} has no champion here; load the champion first")
        return PendingLoad(name, str(version), role, mode, share)  # type: ignore[arg-type]

    async def _load(self, request: PendingLoad) -> PendingLoad:
        """`request` with its version loaded and warm, or as it is when that version serves already."""
        slot = self._slots.get(request.name)
        current = None
        if slot is not None:
            current = slot.champion if request.role == Role.CHAMPION else slot.challenger
        if current is not None and current.version == request.version:
            return request  # nothing to load: a champion stays, a challenger only takes the new mode/share
        loaded = await asyncio.to_thread(self._loader, request.name, request.version)
        return replace(request, loaded=loaded)

    async def _switch(self, pending: PendingLoad) -> ModelStatus:
        """Make what `pending` loaded serve (a plain attribute swap), then drain the version it replaced."""
        name, role = pending.name, pending.role
        slot = self._slots.get(name)
        if pending.loaded is None:
            if role == Role.CHALLENGER:
                slot = self.slot(name)
                slot.mode, slot.canary_share = pending.mode, pending.share
            return self.status(name)
        new = self._deployment(pending.loaded)
        old: Deployment | None
        if role == Role.CHAMPION:
            if slot is None:
                self._slots[name] = ModelSlot(name, new)
                old = None
            else:
                old, slot.champion = slot.champion, new
        else:
            slot = self.slot(name)
            old, slot.challenger = slot.challenger, new
            slot.mode, slot.canary_share = pending.mode, pending.share
        self._metrics.model_info.labels(name, new.version, str(role)).set(1)
        log.info("model %s: %s is now version %s", name, role, new.version)
        if old is not None:
            await self._retire(name, old, role)
        return self.status(name)

    async def unload(self, name: str, *, role: Role = Role.CHAMPION) -> None:
        async with self._locks.setdefault(name, asyncio.Lock()):
            slot = self.slot(name)
            if role == Role.CHALLENGER:
                old, slot.challenger, slot.mode = slot.challenger, None, None
                if old is not None:
                    await self._retire(name, old, role)
                return
            del self._slots[name]
            for dep, r in ((slot.champion, Role.CHAMPION), (slot.challenger, Role.CHALLENGER)):
                if dep is not None:
                    await self._retire(name, dep, r)

    async def close(self) -> None:
        """Drain every batcher (after the transport stopped taking requests)."""
        for name in list(self._slots):
            await self.unload(name)

    def _deployment(self, loaded: LoadedModel) -> Deployment:
        labels = (loaded.name, loaded.version)
        batch_hist = self._metrics.batch_size.labels(*labels)
        depth = self._metrics.queue_depth.labels(*labels)
        batcher = Batcher(
            loaded.predict,
            name=f"{loaded.name}/{loaded.version}",
            max_batch_size=self._batching.max_batch_size,
            max_wait=self._batching.max_wait,
            max_idle=self._batching.max_idle,
            max_queue=self._batching.max_queue,
            after_batch=self._hooks(loaded) if self._hooks else None,
            on_batch_size=batch_hist.observe,
            on_queue_depth=depth.set,
        )
        return Deployment(loaded, batcher)

    async def _retire(self, name: str, old: Deployment, role: Role) -> None:
        await old.batcher.close()
        self._metrics.drop_model_info(name, old.version, str(role))
        log.info("model %s: version %s (%s) drained and released", name, old.version, role)


def ensure_serving(host: ModelHost, name: str) -> None:
    if not host.ready(name):
        raise NotReadyError(f"model {clip(name)} is not ready")


__all__ = [
    "MODES",
    "BatchingConfig",
    "Deployment",
    "ModelAdmin",
    "ModelDescription",
    "ModelHost",
    "ModelSlot",
    "ModelStatus",
    "PendingLoad",
    "ensure_serving",
]
