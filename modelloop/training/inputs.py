"""The inputs of one training: its data loaded, checked and split, and the baseline fit on it.

`load_inputs` does everything that may refuse bad input (the dataset, its columns, the split, the baseline)
before `training.run` creates any run, so bad input changes nothing in MLflow.
"""

from __future__ import annotations

from dataclasses import dataclass

from sklearn.pipeline import Pipeline

from modelloop.training.baselines import fit_baseline
from modelloop.training.config import TrainingConfig
from modelloop.training.datasets import LoadedDataset, Prepared, load_dataset, prepare
from modelloop.training.splits import Split, split


@dataclass(frozen=True)
class Inputs:
    """The data of one training, checked and split, and the baseline fit on it (before any run exists)."""

    loaded: LoadedDataset
    prepared: Prepared
    data: Split
    baseline: Pipeline


def load_inputs(config: TrainingConfig) -> Inputs:
    """Load, check and split the data and fit the baseline: everything that may refuse bad input."""
    loaded = load_dataset(config.dataset)
    prepared = prepare(
        loaded.frame,
        target=config.target,
        task=config.task,
        features=config.dataset.features,
        drop=config.dataset.drop,
        time_column=config.split.time_column,
    )
    data = split(prepared, config.split, seed=config.seed)
    baseline = fit_baseline(config.baseline, task=config.task, x=data.fit_x, y=data.fit_y, seed=config.seed)
    return Inputs(loaded, prepared, data, baseline)


__all__ = ["Inputs", "load_inputs"]
