"""Addresses of MLflow UI pages (runs, model versions, experiments), opening on the model-training views.

The MLflow 3.17 UI is a single-page app with hash routes (`<server>/#/experiments/<id>/runs/<run id>`). Its
workflow type (GenAI or machine learning) is a browser setting, GenAI by default, that hides the model
registry and opens experiments on traces; `?workflowType=machine_learning` after the route selects the
model-training views for that page, so every address built here carries it. Pure string work: called by the
version descriptions (`adapters.mlflow_version_story`), the screenshots (`tools/docs_shots.py`) and whoever
prints a link. `base` is the tracking server's address; None or a non-HTTP tracking URI gives relative links
(`#/...`), which the MLflow UI resolves against the page showing them.
"""

from __future__ import annotations

from urllib.parse import quote

#: The UI's query parameter and value selecting the model-training (not GenAI) views.
WORKFLOW_QUERY = "workflowType=machine_learning"


def _page(base: str | None, route: str) -> str:
    prefix = base.rstrip("/") + "/" if base and base.startswith(("http://", "https://")) else ""
    return f"{prefix}#/{route}?{WORKFLOW_QUERY}"


def run_url(base: str | None, experiment_id: str, run_id: str) -> str:
    """The page of one run."""
    return _page(base, f"experiments/{quote(experiment_id, safe='')}/runs/{quote(run_id, safe='')}")


def experiment_url(base: str | None, experiment_id: str) -> str:
    """The runs of one experiment."""
    return _page(base, f"experiments/{quote(experiment_id, safe='')}")


def version_url(base: str | None, model: str, version: str) -> str:
    """The page of one registered model version."""
    return _page(base, f"models/{quote(model, safe='')}/versions/{quote(version, safe='')}")


def registry_url(base: str | None) -> str:
    """The model registry (every registered model): where a person promotes a version."""
    return _page(base, "models")


def model_url(base: str | None, model: str) -> str:
    """The page of one registered model (its versions)."""
    return _page(base, f"models/{quote(model, safe='')}")


__all__ = ["WORKFLOW_QUERY", "experiment_url", "model_url", "registry_url", "run_url", "version_url"]
