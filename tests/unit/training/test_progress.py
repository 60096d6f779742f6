"""Progress goes where the caller says: trial lines and the summary on the stream it hands the training."""

from __future__ import annotations

import io

import optuna

from modelloop.training.progress import StreamProgress, TrainingProgress


def test_stream_progress_writes_trials_and_the_summary() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    stream = io.StringIO()
    progress: TrainingProgress = StreamProgress(stream)
    progress.tuning_started(metric="roc_auc", total=2)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2, callbacks=[progress.trial_finished])
    progress.finished("the summary")
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("trial 1/2  roc_auc=") and lines[1].startswith("trial 2/2")
    assert lines[-1] == "the summary"
