"""Leader election with a `coordination.k8s.io/v1` Lease, so two controller replicas never fight.

Used by `modelloop controller` when any binding targets Kubernetes; `deploy.controller.Controller` asks
`is_leader()` before every reconcile. The holder renews every `renew_every` seconds; another candidate takes
the Lease once `renewTime + leaseDurationSeconds` has passed. Writes use the Lease's resourceVersion
(optimistic concurrency): of two candidates racing, one gets a conflict and stays a follower. A leader that
cannot renew stops leading as soon as its lease would have expired.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from ..errors import PermanentError, TemporaryError
from .api import KubeApi

log = logging.getLogger(__name__)


def _micro_time(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_time(text: str | None) -> float:
    if not text:
        return 0.0
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class LeaseElector:
    def __init__(
        self,
        api: KubeApi,
        *,
        name: str,
        namespace: str,
        identity: str,
        lease_seconds: int = 15,
        renew_every: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.api = api
        self.name = name
        self.namespace = namespace
        self.identity = identity
        self.lease_seconds = lease_seconds
        self.renew_every = renew_every
        self._clock = clock
        self._held_until = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def is_leader(self) -> bool:
        return self._clock() < self._held_until

    def _lease(
        self, now: float, transitions: int, acquired: str | None, version: str | None
    ) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if version is not None:
            meta["resourceVersion"] = version
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": meta,
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": self.lease_seconds,
                "acquireTime": acquired or _micro_time(now),
                "renewTime": _micro_time(now),
                "leaseTransitions": transitions,
            },
        }

    def try_acquire_or_renew(self) -> bool:
        """One election round; True when this candidate holds the Lease afterwards."""
        now = self._clock()
        try:
            current = self.api.get("coordination.k8s.io/v1", "Lease", self.namespace, self.name)
            if current is None:
                self.api.create(self._lease(now, 0, None, None))
            else:
                spec = current.get("spec") or {}
                holder = spec.get("holderIdentity")
                version = current.get("metadata", {}).get("resourceVersion")
                transitions = int(spec.get("leaseTransitions") or 0)
                if holder == self.identity:
                    self.api.replace(self._lease(now, transitions, spec.get("acquireTime"), version))
                else:
                    expires = _parse_time(spec.get("renewTime")) + int(spec.get("leaseDurationSeconds") or 0)
                    if holder and now < expires:
                        return self.is_leader()
                    self.api.replace(self._lease(now, transitions + 1, None, version))
                    log.info("%s acquired lease %s/%s", self.identity, self.namespace, self.name)
        except (PermanentError, TemporaryError) as exc:  # conflicts included: someone else won this round
            log.info("lease %s/%s not acquired: %s", self.namespace, self.name, exc)
            return self.is_leader()
        self._held_until = now + self.lease_seconds
        return True

    def _run(self) -> None:
        while not self._stop.is_set():
            self.try_acquire_or_renew()
            self._stop.wait(self.renew_every)

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="lease-elector", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._held_until = 0.0


__all__ = ["LeaseElector"]
