"""Reading the runs of an MLflow experiment by their tags and params, as plain data.

Called by the demo's report (`modelloop.cli.demo_report`: the monitoring windows and the rollouts) and by
`adapters.mlflow_rollouts` (finding a deployment run by its record id). What the registry port offers (one run
by id, a version's tags) is read through `MlflowModelRegistry`; this is the search the port has no verb for.
Shares the registry's `MlflowClient`; its failures become the port's errors (`adapters.mlflow_errors`); the
filter is written by `adapters.mlflow_filters`, and what it matches is compared again here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from modelloop.contract.errors import clip

from . import mlflow_errors, mlflow_filters
from .mlflow_registry import MlflowModelRegistry

if TYPE_CHECKING:
    from mlflow.entities import Run

#: Most runs one search returns (MLflow's own ceiling for a page).
MAX_RESULTS = 1000


@dataclass(frozen=True)
class RunRecord:
    """One run found by a search: what a report reads of it."""

    run_id: str
    start_time: int  # milliseconds since the epoch
    status: str  # "RUNNING" | "FINISHED" | "FAILED" | "KILLED" | "SCHEDULED"
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)  # latest value of each metric
    tags: dict[str, str] = field(default_factory=dict)
    experiment_id: str = ""


def run_record(run: Run) -> RunRecord:
    """MLflow's run as plain data."""
    return RunRecord(
        run_id=run.info.run_id,
        start_time=int(run.info.start_time or 0),
        status=str(run.info.status),
        params=dict(run.data.params),
        metrics={k: float(v) for k, v in run.data.metrics.items()},
        tags=dict(run.data.tags),
        experiment_id=str(run.info.experiment_id),
    )


class MlflowRuns:
    """Searches the runs of experiments on the registry's tracking server (safe from several threads)."""

    def __init__(self, registry: MlflowModelRegistry) -> None:
        self._client = registry.client
        self._where = registry.where

    def search(
        self,
        experiment: str,
        *,
        tags: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        max_results: int = MAX_RESULTS,
    ) -> list[RunRecord]:
        """The runs (not deleted) of `experiment` whose tags and params hold `tags` and `params`, in the
        server's order (newest start first); [] when the experiment does not exist."""
        tags, params = dict(tags or {}), dict(params or {})
        conditions = [mlflow_filters.equals(mlflow_filters.tag(k), v) for k, v in tags.items()]
        conditions += [mlflow_filters.equals(mlflow_filters.param(k), v) for k, v in params.items()]
        doing = f"searching the runs of experiment {clip(experiment)}"
        try:
            exp = self._client.get_experiment_by_name(experiment)
            if exp is None:
                return []
            found = self._client.search_runs(
                [exp.experiment_id], " and ".join(conditions), max_results=max_results
            )
        except Exception as exc:
            if mlflow_errors.kind_of(exc) is None:
                raise
            raise mlflow_errors.classify(exc, doing, where=self._where) from None
        runs = [run_record(r) for r in found]
        return [
            r
            for r in runs
            if all(r.tags.get(k) == v for k, v in tags.items())
            and all(r.params.get(k) == v for k, v in params.items())
        ]


__all__ = ["MAX_RESULTS", "MlflowRuns", "RunRecord", "run_record"]
