"""modelloop's MLflow experiments, marked as model-training experiments so the MLflow UI shows them as such.

MLflow 3 opens in "GenAI" mode and decides what an experiment page shows from the experiment's
`mlflow.experimentKind` tag (`custom_model_development`: "Machine learning"; the UI's experiment-type
selector writes the same tag) and, in the 3.17 UI, from the workflow type the browser picked (the sidebar's
switch, or `?workflowType=machine_learning` in the address, see `adapters.mlflow_ui`). Every experiment
modelloop creates or writes to (training, monitoring, deployments, batch scoring) goes through
`ensure_experiment`: created with the tag, or tagged on first use when it exists without one (an experiment
a person created by hand for a training). A kind a person chose is never overwritten.

Called by training's records (`training.records.experiment_id`), `adapters.mlflow_rollouts` and whoever else
creates an experiment. Errors are MLflow's own; callers classify them (`adapters.mlflow_errors`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import mlflow_errors

if TYPE_CHECKING:
    from mlflow import MlflowClient

#: The experiment tag MLflow's UI reads for the experiment's kind.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
#: Its value for classical model training ("Machine learning" in the UI).
MODEL_TRAINING_KIND = "custom_model_development"


def ensure_experiment(client: MlflowClient, name: str) -> str:
    """The id of experiment `name`, created as a model-training experiment on first use (safe when several
    processes race), and tagged as one when it exists without a kind."""
    found = client.get_experiment_by_name(name)
    if found is None:
        try:
            return str(client.create_experiment(name, tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND}))
        except Exception as exc:  # another thread or process created it first
            if mlflow_errors.error_code(exc) != "RESOURCE_ALREADY_EXISTS":
                raise
            found = client.get_experiment_by_name(name)
            if found is None:
                raise
    mark_model_training(client, str(found.experiment_id), dict(found.tags or {}))
    return str(found.experiment_id)


def mark_model_training(client: MlflowClient, experiment_id: str, tags: dict[str, str]) -> None:
    """Tag an existing experiment as model training unless it already has a kind (`tags`: its tags now)."""
    if not tags.get(EXPERIMENT_KIND_TAG):
        client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND)


__all__ = ["EXPERIMENT_KIND_TAG", "MODEL_TRAINING_KIND", "ensure_experiment", "mark_model_training"]
