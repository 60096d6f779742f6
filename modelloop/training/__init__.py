"""training: datasets, splits, baselines, the Optuna study, MLflow records and the promotion gate.

The CLI (`modelloop train`) calls `load_config` and `run_training`; nothing else here is needed from outside.
"""

from modelloop.training.config import TrainingConfig, load_config
from modelloop.training.run import TrainingResult, run_training

__all__ = ["TrainingConfig", "TrainingResult", "load_config", "run_training"]
