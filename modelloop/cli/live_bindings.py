"""Bindings that change while the local platform runs: `modelloop up` watches its bindings file and hands
every valid new content to the controller, with no restart.

`BindingsWatcher` looks at the file every `every` seconds (by content, so an editor's rewrite of the same
text is no change). A missing or empty file means no bindings. A file that does not validate is said in one
log line, once per content, and the bindings in use stay in use until the file is fixed.
`LiveController` is the deployment controller with `set_bindings`: added and changed bindings are reconciled
at once, what a removed binding served is deleted (the controller's prune).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from modelloop.contract.config_files import parse_yaml_mapping
from modelloop.contract.errors import ConfigError
from modelloop.deploy.bindings import Binding, parse_bindings
from modelloop.deploy.controller import Controller
from modelloop.deploy.reconcile import Result

log = logging.getLogger(__name__)

_MISSING = b""  # no file (or an empty one): no bindings


def read_content(path: Path) -> bytes:
    """A bindings file's content (`_MISSING` when there is no file)."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        return _MISSING


def parse_content(path: Path, content: bytes) -> list[Binding]:
    """The bindings a file's `content` holds (none for a missing or empty file); `ConfigError` naming the
    problem, never the content."""
    if content == _MISSING:
        return []
    what = f"bindings file {path}"
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{what} is not UTF-8 text") from None
    return parse_bindings(parse_yaml_mapping(text, what=what), source=what)


def read_bindings(path: Path) -> list[Binding]:
    """The bindings in the file at `path`, as the watcher reads them (no file: none)."""
    return parse_content(path, read_content(path))


class LiveController(Controller):
    """A `Controller` whose bindings can be replaced while it runs (see the module docstring)."""

    def set_bindings(self, bindings: Sequence[Binding]) -> tuple[list[str], list[str], list[str]]:
        """Serve `bindings` from now on; the names (added, changed, removed)."""
        new = {b.name: b for b in bindings}
        with self._cond:
            old = self.bindings
            added = sorted(set(new) - set(old))
            removed = sorted(set(old) - set(new))
            changed = sorted(n for n in set(new) & set(old) if new[n] != old[n])
            self.bindings = new
            for name in removed:
                self._due.pop(name, None)
                self.last_results.pop(name, None)
        if removed:
            self.prune()
        if added or changed:
            self.enqueue([*added, *changed])
        return added, changed, removed

    def reconcile_one(self, name: str) -> Result | None:
        """As `Controller.reconcile_one`; a binding removed since it was queued is skipped."""
        if name not in self.bindings:
            return None
        try:
            return super().reconcile_one(name)
        except KeyError:  # removed between the check and the controller's own lookup
            return None


class BindingsWatcher:
    """Watches a bindings file on a thread (see the module docstring); `apply` gets each valid new list."""

    def __init__(
        self,
        path: Path,
        apply: Callable[[list[Binding]], None],
        *,
        every: float = 1.0,
        current: bytes | None = None,
    ) -> None:
        self.path = Path(path)
        self.apply = apply
        self.every = every
        self._seen = _MISSING if current is None else current
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def read(self) -> bytes:
        """The file's content now (`_MISSING` when there is no file)."""
        return read_content(self.path)

    def check(self) -> bool:
        """Look at the file once; True when new bindings were applied."""
        try:
            content = self.read()
        except OSError as exc:
            log.warning(
                "bindings file %s cannot be read (%s); the bindings in use stay", self.path, exc.strerror
            )
            return False
        if content == self._seen:
            return False
        self._seen = content
        try:
            bindings = self.parse(content)
        except ConfigError as exc:
            log.warning("%s; the bindings in use stay until the file is fixed", exc)
            return False
        self.apply(bindings)
        return True

    def parse(self, content: bytes) -> list[Binding]:
        """The bindings `content` holds (none for a missing file); `ConfigError` naming the problem."""
        return parse_content(self.path, content)

    def start(self) -> BindingsWatcher:
        self._thread = threading.Thread(target=self._loop, name="bindings-watcher", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.check()
            except Exception:  # a bad apply must not end the watching
                log.exception("applying the bindings file %s failed", self.path)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None


__all__ = ["BindingsWatcher", "LiveController", "parse_content", "read_bindings", "read_content"]
