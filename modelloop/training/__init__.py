"""training: datasets, splits, baselines, the Optuna study, MLflow records and the promotion gate.

The CLI (`modelloop train`) calls `load_config` and `run_training`, passing a `StreamProgress` (a
`TrainingProgress`) to hear how it goes; nothing else here is needed from outside.
"""

from modelloop.training.config import TrainingConfig, load_config
from modelloop.training.progress import StreamProgress, TrainingProgress
from modelloop.training.run import TrainingResult, run_training

__all__ = [
    "StreamProgress",
    "TrainingConfig",
    "TrainingProgress",
    "TrainingResult",
    "load_config",
    "run_training",
]
