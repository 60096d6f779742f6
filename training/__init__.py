"""training: datasets, splits, baselines, the Optuna study, MLflow records and the promotion gate."""
