"""The rows each trial of a search fits on and is scored on, all from the training rows."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from refit.errors import TrainingError
from refit.spec import DataSpec, ModelSpec, Task, TuneSpec
from refit.train.pipeline import target_array

Parts = list[tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]]


def folds(frame: pd.DataFrame, data: DataSpec, model: ModelSpec, search: TuneSpec) -> Parts:
    """(fit rows, score rows) positions: the folds, or one validation part."""
    from sklearn.model_selection import KFold, StratifiedKFold, train_test_split

    rows = len(frame)
    positions = np.arange(rows)
    labels = None
    if model.task is Task.CLASSIFICATION and data.target is not None:
        labels = target_array(frame, data)
        if np.unique(labels, return_counts=True)[1].min() < (search.folds or 2):
            labels = None  # a class too small to reach every part: plain folds
    if search.folds is None:
        if rows < 2:
            raise TrainingError(f"tuning needs at least 2 training rows, got {rows}")
        fit, held = train_test_split(
            positions,
            test_size=search.validation_fraction,
            random_state=search.seed,
            stratify=labels,
        )
        return [(np.sort(fit), np.sort(held))]
    if rows < search.folds:
        raise TrainingError(
            f"model.tune.folds is {search.folds}, but the training part has {rows} rows: "
            "lower folds, or set folds: null to score on one validation part"
        )
    if labels is not None:
        splitter: Any = StratifiedKFold(search.folds, shuffle=True, random_state=search.seed)
        return list(splitter.split(positions, labels))
    return list(KFold(search.folds, shuffle=True, random_state=search.seed).split(positions))
