"""The deployment controller: keeps every binding's target in line with the registry.

Used by `modelloop controller` and by the local platform (`modelloop up`):

    controller = Controller(bindings, registry, {"local": LocalTarget(...)}, webhook_secret="...")
    controller.start()      # worker, poll and webhook threads
    ...
    controller.stop()

Triggers: a periodic poll (level-triggered: every binding, catches stage transitions and lost webhooks),
verified MLflow webhooks (the bindings of the event's model, at once), and retries after `TemporaryError`
(with the error's delay, doubled on each consecutive failure up to `max_backoff`). Work is queued per
binding, so one binding is reconciled by one worker at a time. When a reconcile leaves write-backs the
registry could not take, the binding is reconciled again soon (which writes them) rather than at the poll.
With a `leader` elector (Kubernetes Lease), only the leader reconciles. Every poll also prunes: what a target
serves under a name no binding of that target has any more (a binding removed from the bindings file, e.g.
by a `helm upgrade`) is deleted. Nothing a reconcile or a prune raises stops the controller.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Protocol

from modelloop.contract.registry import is_modelloop_tag

from .bindings import Binding
from .errors import TemporaryError
from .reconcile import Reconciler, Result
from .registry import Registry
from .target import DeploymentTarget
from .webhook import Event, WebhookVerifier
from .webhook_http import WebhookServer

log = logging.getLogger(__name__)


class LeaderElector(Protocol):
    """Who may reconcile: `is_leader()` is checked before every reconcile."""

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def is_leader(self) -> bool: ...


class Controller:
    """Reconcile loop with poll, webhook and retry triggers (see the module docstring)."""

    def __init__(
        self,
        bindings: Sequence[Binding],
        registry: Registry,
        targets: Mapping[str, DeploymentTarget],
        *,
        poll_interval: float = 30.0,
        rollout_deadline: float = 120.0,
        webhook_secret: str | None = None,
        webhook_host: str = "127.0.0.1",
        webhook_port: int = 0,
        workers: int = 2,
        max_backoff: float = 60.0,
        leader: LeaderElector | None = None,
    ) -> None:
        self.bindings = {b.name: b for b in bindings}
        self.reconciler = Reconciler(registry, targets, rollout_deadline=rollout_deadline)
        self.poll_interval = poll_interval
        self.max_backoff = max_backoff
        self.leader = leader
        self.last_results: dict[str, Result] = {}
        self._due: dict[str, float] = {}  # binding -> when to reconcile next
        self._busy: set[str] = set()
        self._failures: dict[str, int] = {}
        self._cond = threading.Condition()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._workers = workers
        self.webhook: WebhookServer | None = None
        if webhook_secret:
            self.webhook = WebhookServer(
                WebhookVerifier(webhook_secret), self.on_event, host=webhook_host, port=webhook_port
            )

    # triggers -------------------------------------------------------------------------------------------

    def enqueue(self, names: Sequence[str] | None = None, *, delay: float = 0.0) -> None:
        """Reconcile these bindings (all when None) after `delay` seconds (earlier requests win)."""
        when = time.monotonic() + delay
        with self._cond:
            for name in self.bindings if names is None else names:
                if name in self.bindings:
                    self._due[name] = min(self._due.get(name, when), when)
            self._cond.notify_all()

    def on_event(self, event: Event) -> None:
        """A verified webhook: reconcile the bindings that serve the event's model. Tags modelloop itself
        sets (`modelloop.*`) are skipped; deleting one (e.g. a failed rollout's tag, to retry) is not."""
        key = event.data.get("key")
        if event.action == "set" and isinstance(key, str) and is_modelloop_tag(key):
            return
        affected = [b.name for b in self.bindings.values() if b.model == event.model]
        if affected:
            self.enqueue(affected)

    # running ----------------------------------------------------------------------------------------------

    def start(self) -> Controller:
        self._stopping.clear()
        if self.leader is not None:
            self.leader.start()
        if self.webhook is not None:
            self.webhook.start()
        for i in range(self._workers):
            self._spawn(self._work, f"controller-worker-{i}")
        self._spawn(self._poll, "controller-poll")
        return self

    def _spawn(self, fn: object, name: str) -> None:
        thread = threading.Thread(target=fn, name=name, daemon=True)  # type: ignore[arg-type]
        thread.start()
        self._threads.append(thread)

    def stop(self) -> None:
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()
        if self.webhook is not None:
            self.webhook.stop()
        for thread in self._threads:
            thread.join(timeout=10)
        self._threads.clear()
        if self.leader is not None:
            self.leader.stop()

    def _poll(self) -> None:
        while not self._stopping.is_set():
            self.prune()
            self.enqueue()
            self._stopping.wait(self.poll_interval)

    def prune(self) -> list[str]:
        """Delete what a target serves for a binding it no longer has; the names deleted."""
        if self.leader is not None and not self.leader.is_leader():
            return []
        pruned = []
        for kind, target in self.reconciler.targets.items():
            wanted = {b.name for b in self.bindings.values() if b.target == kind}
            try:
                for state in target.list():
                    if state.name not in wanted:
                        log.info("binding %s is gone: deleting its %s deployment", state.name, kind)
                        target.delete(state.name)
                        pruned.append(state.name)
            except Exception:
                log.exception("pruning the %s target failed; trying again at the next poll", kind)
        return pruned

    def _next(self) -> str | None:
        with self._cond:
            while not self._stopping.is_set():
                now = time.monotonic()
                ready = [(t, n) for n, t in self._due.items() if t <= now and n not in self._busy]
                if ready:
                    _, name = min(ready)
                    del self._due[name]
                    self._busy.add(name)
                    return name
                waits = [t - now for n, t in self._due.items() if n not in self._busy]
                self._cond.wait(timeout=min([1.0, *waits]))
        return None

    def _work(self) -> None:
        while (name := self._next()) is not None:
            try:
                self.reconcile_one(name)
            finally:
                with self._cond:
                    self._busy.discard(name)
                    self._cond.notify_all()

    def reconcile_one(self, name: str) -> Result | None:
        """Reconcile one binding now; failures are logged and retried, never raised."""
        if self.leader is not None and not self.leader.is_leader():
            log.debug("not the leader; skipping %s", name)
            return None
        binding = self.bindings[name]
        try:
            result = self.reconciler.reconcile(binding)
        except TemporaryError as exc:
            count = self._failures[name] = self._failures.get(name, 0) + 1
            delay = min(self.max_backoff, exc.delay * (2 ** (count - 1)))
            log.warning("binding %s: %s; retrying in %.1fs", name, exc, delay)
            self.enqueue([name], delay=delay)
            return None
        except Exception:
            count = self._failures[name] = self._failures.get(name, 0) + 1
            delay = min(self.max_backoff, 2.0**count)
            log.exception("binding %s: reconcile failed; retrying in %.1fs", name, delay)
            self.enqueue([name], delay=delay)
            return None
        self._failures.pop(name, None)
        self.last_results[name] = result
        if self.reconciler.pending_writes:  # the registry went away after reading it: write back soon
            self.enqueue([name], delay=min(self.max_backoff, 5.0))
        return result

    def reconcile_all(self) -> dict[str, Result | None]:
        """Reconcile every binding once, in this thread (for `--once` and tests)."""
        return {name: self.reconcile_one(name) for name in self.bindings}


__all__ = ["Controller", "LeaderElector"]
