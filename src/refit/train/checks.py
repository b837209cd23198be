"""What refit checks before a training run does any work: that the project may train, that
its estimator (or function) resolves, and that the task can learn the snapshot's target (or,
for an anomaly detector, score against its label).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from refit._metrics_unsupervised import anomaly_truth
from refit.errors import SpecError
from refit.spec import Spec, Task
from refit.train.kinds import CONTAMINATION_PARAMS, estimator_params
from refit.train.pipeline import resolve_estimator, resolve_function
from refit.train.tuning import check_search, with_search

MAX_CLASSES = 1000
"""The most distinct values a numeric target of a classification may hold."""


def check_model_spec(spec: Spec, root: Path) -> None:
    """What `refit train` checks before any work: that it may train, then `check_model`."""
    if spec.model.trained_elsewhere:
        raise SpecError(
            "model.trained_elsewhere is true: this project's versions come from "
            "`refit models register FILE`, not from `refit train`"
        )
    check_model(spec, root)


def check_model(spec: Spec, root: Path) -> None:
    """Resolve the estimator with its params (or the function) now, so that every command
    that will train (`refit train`, `refit up`, `refit scheduler`) refuses a bad one first;
    and its search (`model.tune`, or a clustering's default one), by `check_search`."""
    if spec.model.estimator is not None:
        resolve_estimator(spec.model.estimator, estimator_params(spec.model), spec.model.task)
    elif spec.model.function is not None:
        resolve_function(spec.model.function, root)
    searched = set(spec.model.tune.params) if spec.model.tune is not None else set()
    if spec.model.contamination is not None and searched & set(CONTAMINATION_PARAMS):
        name = sorted(searched & set(CONTAMINATION_PARAMS))[0]
        raise SpecError(
            f"model.tune.params.{name}: model.contamination sets {name} already; search it "
            "without model.contamination, or leave it out of the search"
        )
    search = with_search(spec.model)
    if search is not None:
        check_search(search)


def check_target(frame: pd.DataFrame, spec: Spec) -> None:
    """Refuse a target that the task cannot learn: text for regression; for classification,
    numbers that are not whole, or more than `MAX_CLASSES` distinct ones (a quantity); for
    anomaly, a label that does not say which rows are anomalies (see `anomaly_truth`)."""
    name, task = spec.data.target, spec.model.task
    if name is None:
        return
    if task is Task.ANOMALY:
        try:
            anomaly_truth(frame[name].to_numpy(dtype=object))
        except ValueError as exc:
            raise SpecError(f"data.target {name!r} {exc}") from None
        return
    y = frame[name].dropna()
    numeric = pd.api.types.is_numeric_dtype(y.dtype) and not pd.api.types.is_bool_dtype(y.dtype)
    if task is Task.REGRESSION and not numeric:
        shown = ", ".join(repr(str(v)) for v in y.unique()[:3])
        raise SpecError(
            f"data.target {name!r} holds text ({shown}, ...), but model.task is regression, "
            "which predicts numbers: set model.task: classification, or give a numeric target"
        )
    if task is Task.CLASSIFICATION and numeric:
        values = y.to_numpy(dtype=np.float64)
        distinct = np.unique(values)
        fractions = distinct[distinct != np.floor(distinct)]
        if len(fractions) or len(distinct) > MAX_CLASSES:
            shown = ", ".join(f"{v:g}" for v in (fractions if len(fractions) else distinct)[:3])
            whole = ", not all whole" if len(fractions) else ""
            raise SpecError(
                f"data.target {name!r} holds {len(distinct):,} distinct numbers{whole} "
                f"({shown}, ...), but model.task is classification, which learns one class per "
                f"value (at most {MAX_CLASSES:,}): set model.task: regression"
            )
