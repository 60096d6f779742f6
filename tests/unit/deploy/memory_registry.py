"""An in-memory registry port for the controller core's unit tests (integration tests use real MLflow)."""

from __future__ import annotations

from modelloop.deploy.errors import TemporaryError
from modelloop.deploy.registry import Registry, RolloutRecord


class MemoryRegistry(Registry):
    def __init__(self) -> None:
        self.aliases: dict[tuple[str, str], str] = {}
        self.stages: dict[tuple[str, str], str] = {}
        self.tags: dict[tuple[str, str], dict[str, str]] = {}
        self.records: list[RolloutRecord] = []
        self.down = False

    def _up(self) -> None:
        if self.down:
            raise TemporaryError("registry down", delay=0.01)

    def resolve(self, model: str, *, alias: str, stage: str | None = None) -> str | None:
        self._up()
        if (model, alias) in self.aliases:
            return self.aliases[(model, alias)]
        return self.stages.get((model, stage)) if stage else None

    def version_tags(self, model: str, version: str) -> dict[str, str]:
        self._up()
        return dict(self.tags.get((model, version), {}))

    def set_version_tags(self, model: str, version: str, tags: dict[str, str]) -> None:
        self._up()
        self.tags.setdefault((model, version), {}).update(tags)

    def record_rollout(self, record: RolloutRecord) -> None:
        self._up()
        self.records.append(record)
