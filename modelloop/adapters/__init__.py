"""Adapters from the contract's ports to outside systems.

`mlflow_registry.MlflowModelRegistry` implements `modelloop.contract.model_registry.ModelRegistry` over an
MLflow tracking server (and loads registered models for serving and the promotion gate, through
`mlflow_models`); `mlflow_errors` is the one classification of MLflow's exceptions into the port's errors;
`mlflow_filters` writes MLflow's search filters. What the port has no verb for sits beside it, sharing its
client: `mlflow_rollouts` (deploy's deployment runs), `mlflow_webhooks` (deploy's webhook registration) and
`mlflow_runs` (searching an experiment's runs, for the demo's report). Training, serving, monitoring, deploy
and the CLI import them; the contract does not.
"""
