"""One level-triggered reconcile of one binding: read what the registry says now, read what the target serves,
make them match, and write the outcome back to the registry.

Called by `deploy.controller.Controller` (from the poll, from webhooks, and on retry). Idempotent: when the
target already serves what the registry names, nothing is changed. A version tagged `modelloop.rollout=failed`
is not tried again (delete the tag to retry it); the target keeps serving the previous version.
Raises `TemporaryError` (retry later); every other outcome is returned as a `Result`.

A rollout's write-backs are made in one order: the versions it retires are tagged `retired` (with
`serving_until`), the new versions get their binding, target and address (and the failure's reason, or
`serving_from`), the deployment run is logged (which also rewrites the stories, the descriptions, of the
versions involved: `deploy.registry`), and only then the new versions' outcome tag (`serving` / `failed`)
is set, so whoever sees the outcome sees the rest of the record. Times are ISO-8601 UTC.
Write-backs (version tags, the deployment run) that the registry cannot take are kept in memory, in order,
and written at the start of the next reconcile of any binding; `pending_writes` counts them. Nothing is
dropped unless the registry refuses it outright (logged as an error).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from modelloop.contract.registry import (
    TAG_ROLLOUT,
    TAG_ROLLOUT_ADDRESS,
    TAG_ROLLOUT_BINDING,
    TAG_ROLLOUT_REASON,
    TAG_ROLLOUT_SERVING_FROM,
    TAG_ROLLOUT_SERVING_UNTIL,
    TAG_ROLLOUT_TARGET,
)
from modelloop.contract.timestamps import iso_utc

from .addresses import serving_address
from .bindings import Binding
from .errors import PermanentError, RolloutFailedError
from .registry import Registry, RolloutRecord
from .target import DeploymentSpec, DeploymentState, DeploymentTarget

log = logging.getLogger(__name__)

ROLLOUT_SERVING = "serving"
ROLLOUT_FAILED = "failed"
ROLLOUT_RETIRED = "retired"


class Outcome(StrEnum):
    UNCHANGED = "unchanged"
    CREATED = "created"
    UPDATED = "updated"
    FAILED = "failed"
    NOTHING = "nothing"  # the registry names no version to serve


@dataclass(frozen=True)
class Result:
    binding: str
    outcome: Outcome
    state: DeploymentState | None
    reason: str = ""


class Reconciler:
    """Makes targets match the registry, one binding at a time (calls for one binding are serialised)."""

    def __init__(
        self,
        registry: Registry,
        targets: Mapping[str, DeploymentTarget],
        *,
        rollout_deadline: float = 120.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.registry = registry
        self.targets = dict(targets)
        self.rollout_deadline = rollout_deadline
        self._clock = clock
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._pending: list[_TagWrite | RolloutRecord] = []  # write-backs the registry could not take yet
        self._pending_lock = threading.Lock()
        self._failed: set[tuple[str, str]] = set()  # (model, version) that failed, even if tagging failed

    def _lock(self, name: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(name, threading.Lock())

    def target_for(self, binding: Binding) -> DeploymentTarget:
        try:
            return self.targets[binding.target]
        except KeyError:
            raise PermanentError(f"binding {binding.name}: no {binding.target!r} target configured") from None

    def reconcile(self, binding: Binding) -> Result:
        with self._lock(binding.name):
            self._flush_records()
            return self._reconcile(binding)

    def _usable(self, model: str, version: str | None, fallback: str | None) -> str | None:
        if version is None:
            return None
        if (model, version) in self._failed:
            return fallback
        if self.registry.version_tags(model, version).get(TAG_ROLLOUT) == ROLLOUT_FAILED:
            self._failed.add((model, version))
            return fallback
        return version

    def _desired(self, binding: Binding, actual: DeploymentState | None) -> DeploymentSpec | None:
        model = binding.model
        champion = self.registry.resolve(model, alias=binding.alias, stage=binding.champion_stage)
        challenger = None
        if binding.challenger is not None:
            challenger = self.registry.resolve(
                model, alias=binding.challenger.alias, stage=binding.challenger_stage
            )
        champion = self._usable(model, champion, actual.champion_version if actual else None)
        challenger = self._usable(model, challenger, actual.challenger_version if actual else None)
        if champion is None:
            return None
        if challenger == champion:
            challenger = None
        return DeploymentSpec(binding=binding, champion_version=champion, challenger_version=challenger)

    def _reconcile(self, binding: Binding) -> Result:
        began = self._clock()
        target = self.target_for(binding)
        actual = target.get(binding.name)
        spec = self._desired(binding, actual)
        if spec is None:
            # said on every reconcile until an alias is set: debug (`up` shows the binding as waiting)
            log.debug("binding %s: registry names no version of %s to serve", binding.name, binding.model)
            return Result(binding.name, Outcome.NOTHING, actual)
        if actual is not None and actual.matches(spec):
            self._repair_tags(spec)
            return Result(binding.name, Outcome.UNCHANGED, actual)
        challenger = f", challenger v{spec.challenger_version}" if spec.challenger_version else ""
        timeline = [
            (
                began,
                f"registry and {binding.target} target read: {binding.alias} names v{spec.champion_version}",
            ),
            (
                self._clock(),
                f"rollout v{actual.champion_version if actual else '-'} -> v{spec.champion_version}"
                f"{challenger} on {binding.target}",
            ),
        ]
        log.info(
            "binding %s: rolling out %s/%s%s on %s",
            binding.name,
            spec.model,
            spec.champion_version,
            challenger,
            binding.target,
        )
        try:
            if actual is None:
                state = target.create(spec, deadline=self.rollout_deadline)
            else:
                state = target.update(spec, deadline=self.rollout_deadline)
        except RolloutFailedError as exc:
            timeline.append((self._clock(), f"failed: {exc}"))
            self._record_failure(spec, actual, str(exc), timeline, address=serving_address(target, binding))
            return Result(binding.name, Outcome.FAILED, target.get(binding.name), reason=str(exc))
        timeline.append((self._clock(), "ready"))  # the outcome, last
        self._record_success(spec, actual, timeline, address=serving_address(target, binding))
        return Result(binding.name, Outcome.CREATED if actual is None else Outcome.UPDATED, state)

    def _new_versions(self, spec: DeploymentSpec, actual: DeploymentState | None) -> list[str]:
        old = {actual.champion_version, actual.challenger_version} if actual else set()
        return [v for v in (spec.champion_version, spec.challenger_version) if v is not None and v not in old]

    def _record_failure(
        self,
        spec: DeploymentSpec,
        actual: DeploymentState | None,
        reason: str,
        timeline: list[tuple[float, str]],
        *,
        address: str,
    ) -> None:
        log.error("binding %s: rollout of %s failed: %s", spec.name, spec.model, reason)
        new = self._new_versions(spec, actual)
        for version in new:
            self._failed.add((spec.model, version))
            self._queue_tags(
                spec.model,
                version,
                {TAG_ROLLOUT_REASON: reason[:4000], **_where(spec, address)},
            )
        self._finish_record(spec, actual, new, ROLLOUT_FAILED, timeline, reason=reason, address=address)

    def _record_success(
        self,
        spec: DeploymentSpec,
        actual: DeploymentState | None,
        timeline: list[tuple[float, str]],
        *,
        address: str,
    ) -> None:
        at = iso_utc(timeline[-1][0])
        new = self._new_versions(spec, actual)
        if actual is not None:
            now_serving = {spec.champion_version, spec.challenger_version}
            for old in (actual.champion_version, actual.challenger_version):
                if old is not None and old not in now_serving:
                    self._queue_tags(
                        spec.model, old, {TAG_ROLLOUT: ROLLOUT_RETIRED, TAG_ROLLOUT_SERVING_UNTIL: at}
                    )
        for version in new:
            self._queue_tags(spec.model, version, {**_where(spec, address), TAG_ROLLOUT_SERVING_FROM: at})
        self._finish_record(spec, actual, new, ROLLOUT_SERVING, timeline, address=address)

    def _finish_record(
        self,
        spec: DeploymentSpec,
        actual: DeploymentState | None,
        new: list[str],
        outcome: str,
        timeline: list[tuple[float, str]],
        *,
        reason: str = "",
        address: str = "",
    ) -> None:
        """Queue the rollout's record, then the outcome tag of each new version (the outcome last: see the
        module docstring)."""
        self._queue_record(
            RolloutRecord(
                binding=spec.name,
                model=spec.model,
                from_version=actual.champion_version if actual else None,
                to_version=spec.champion_version,
                outcome=outcome,
                reason=reason,
                timeline=timeline,
                target=spec.binding.target,
                address=address,
            )
        )
        for version in new:
            self._queue_tags(spec.model, version, {TAG_ROLLOUT: outcome})

    def _repair_tags(self, spec: DeploymentSpec) -> None:
        """Level-triggered tags: a served version whose tags were lost (registry down then) gets them."""
        for version in (spec.champion_version, spec.challenger_version):
            if version is None:
                continue
            tags = self.registry.version_tags(spec.model, version)
            if tags.get(TAG_ROLLOUT) != ROLLOUT_SERVING or tags.get(TAG_ROLLOUT_BINDING) != spec.name:
                self.registry.set_version_tags(
                    spec.model,
                    version,
                    {
                        TAG_ROLLOUT_BINDING: spec.name,
                        TAG_ROLLOUT_TARGET: spec.binding.target,
                        TAG_ROLLOUT_SERVING_FROM: tags.get(TAG_ROLLOUT_SERVING_FROM)
                        or iso_utc(self._clock()),
                        TAG_ROLLOUT: ROLLOUT_SERVING,
                    },
                )

    def _queue_tags(self, model: str, version: str, tags: dict[str, str]) -> None:
        self._write(_TagWrite(model, version, tags))

    def _queue_record(self, record: RolloutRecord) -> None:
        self._write(record)

    @property
    def pending_writes(self) -> int:
        """Tag writes and rollout records waiting for the registry to come back."""
        with self._pending_lock:
            return len(self._pending)

    def _write(self, item: _TagWrite | RolloutRecord) -> None:
        """Queue a write-back; the queue is flushed in order (older writes never land after newer ones)."""
        with self._pending_lock:
            self._pending.append(item)
            if len(self._pending) == 1:  # else the registry was down just now: the next reconcile flushes
                self._flush_locked()

    def _flush_records(self) -> None:
        with self._pending_lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        while self._pending:
            item = self._pending[0]
            try:
                if isinstance(item, _TagWrite):
                    self.registry.set_version_tags(item.model, item.version, item.tags)
                else:
                    self.registry.record_rollout(item)
            except PermanentError as exc:
                log.error("registry refused %s; not retried: %s", item.describe(), exc)
            except Exception as exc:  # registry down: kept, written by the next reconcile (or poll)
                log.warning(
                    "registry unavailable (%s); %d write(s) wait for it, next: %s",
                    exc,
                    len(self._pending),
                    item.describe(),
                )
                return
            self._pending.pop(0)


def _where(spec: DeploymentSpec, address: str) -> dict[str, str]:
    """The tags saying where a version was rolled out: binding, target and (when known) address."""
    tags = {TAG_ROLLOUT_BINDING: spec.name, TAG_ROLLOUT_TARGET: spec.binding.target}
    if address:
        tags[TAG_ROLLOUT_ADDRESS] = address
    return tags


@dataclass(frozen=True)
class _TagWrite:
    model: str
    version: str
    tags: dict[str, str]

    def describe(self) -> str:
        return f"tags of {self.model}/{self.version}"


__all__ = ["Outcome", "Reconciler", "Result"]
