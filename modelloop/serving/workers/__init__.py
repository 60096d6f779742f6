"""Several scoring-server processes on one port (`modelloop serve --workers N`, issue 14): every core of a
pod.

`serve` runs `serving.app.run` itself when N is 1 (the plain single-process server, unchanged), and a
`Supervisor` (`supervisor.py`: the parent, how swaps, health, restarts and SIGTERM work across workers) of N
worker processes (`worker.py`) otherwise. N defaults to the CPUs the process may use (`cpus.py`).
"""

from __future__ import annotations

from ..settings import ServeSettings
from .cpus import usable_cpus


def resolve_workers(settings: ServeSettings) -> int:
    """The worker count: `settings.workers`, or the CPUs this process may use."""
    return settings.workers if settings.workers is not None else usable_cpus()


def serve(settings: ServeSettings) -> None:
    """Run the scoring server with `resolve_workers(settings)` processes until SIGTERM (see the module
    docstring); raises what stopped it from starting."""
    import asyncio

    from ..app import run

    count = resolve_workers(settings)
    if count == 1:
        asyncio.run(run(settings))
        return
    from .supervisor import Supervisor

    Supervisor(settings, count).run()


__all__ = ["resolve_workers", "serve", "usable_cpus"]
