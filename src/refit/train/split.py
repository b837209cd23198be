"""Splitting a snapshot into the rows a model trains on and the rows it is judged on.

`model.holdout.split` picks the method. `random` and `stratified` decide each row's side by a
stable hash of its content (salted with `model.holdout.seed`): a row is held out when its hash,
read as a number in [0, 1), is below `model.holdout.fraction`. So a row keeps its side in every
later snapshot, and the gate is fair: the rows a champion was trained on never reach a later
holdout, and both models are judged on rows neither has seen. (Identical rows share a side
too, so a duplicate cannot leak from training into the holdout.) The holdout's size is
therefore close to, not exactly, `fraction` of the rows. `stratified` also makes sure every
class with two rows or more has a row on each side. `time` holds out the latest rows by
`data.time_column`, which is how the model will meet data in production. A stratified split
that cannot be made (a class with a single row, a holdout smaller than the number of classes)
falls back to a random one and says why in `Split.note`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from refit.errors import TrainingError
from refit.spec import DataSpec, ModelSpec, SplitKind, Task
from refit.train.pipeline import target_array

MIN_ROWS = 10
"""The smallest snapshot refit trains on."""


@dataclass(frozen=True)
class Split:
    """The two parts of a snapshot, the method that made them, and why it changed, if it did."""

    train: pd.DataFrame
    holdout: pd.DataFrame
    method: SplitKind
    note: str | None = None


def split(frame: pd.DataFrame, data: DataSpec, model: ModelSpec) -> Split:
    """Split `frame` by `model.split_kind`; refuse a snapshot too small to split."""
    rows = len(frame)
    fraction = model.holdout.fraction
    if rows < MIN_ROWS:
        raise TrainingError(
            f"the snapshot has {rows} row(s); training needs at least {MIN_ROWS} "
            "so that some can be held out for evaluation"
        )
    n_holdout = math.ceil(rows * fraction)
    n_train = rows - n_holdout
    if n_train < 1:
        raise TrainingError(
            f"holding out {fraction:.0%} of {rows} rows leaves none to train on; "
            "lower model.holdout.fraction or wait for more rows"
        )
    # Without a target (or one that no model learns) the rows alone decide their side.
    y = target_array(frame, data) if model.supervised else np.zeros(rows)
    if model.task is Task.CLASSIFICATION:
        _require_classes(y, rows, f"the target {data.target!r}", "the snapshot")

    kind, note = model.split_kind, None
    if kind is SplitKind.TIME:
        train, holdout = _by_time(frame, data, n_train)
    else:
        if kind is SplitKind.STRATIFIED:
            reason = _cannot_stratify(y, n_train, n_holdout)
            if reason is not None:
                kind, note = SplitKind.RANDOM, f"used a random split: {reason}"
        held = _held_out(frame, y, fraction, model.holdout.seed, kind is SplitKind.STRATIFIED)
        train, holdout = frame[~held], frame[held]
    if model.task is Task.CLASSIFICATION:
        _require_classes(
            target_array(train, data), len(train), "the training part", f"this {kind.value} split"
        )
    return Split(train=train, holdout=holdout, method=kind, note=note)


def draws(frame: pd.DataFrame, seed: int) -> np.ndarray[Any, Any]:
    """A number in [0, 1) per row that depends only on the row's values and the seed."""
    rows = pd.util.hash_pandas_object(frame, index=False).to_numpy(dtype=np.uint64)
    salt = np.uint64((seed * 0x9E3779B97F4A7C15 + 1) % 2**64)
    return pd.util.hash_array(rows ^ salt) / float(2**64)


def _held_out(
    frame: pd.DataFrame, y: np.ndarray[Any, Any], fraction: float, seed: int, stratify: bool
) -> np.ndarray[Any, Any]:
    u = draws(frame, seed)
    held = u < fraction
    groups = [np.flatnonzero(y == label) for label in np.unique(y)] if stratify else []
    for rows in [*groups, np.arange(len(frame))]:
        if len(rows) >= 2 and held[rows].all():
            held[rows[u[rows].argmax()]] = False
        if len(rows) >= 2 and not held[rows].any():
            held[rows[u[rows].argmin()]] = True
    return held


def _by_time(
    frame: pd.DataFrame, data: DataSpec, n_train: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    column = data.time_column
    if column is None:
        raise TrainingError("a time split needs data.time_column")
    if column not in frame.columns:
        raise TrainingError(f"a time split needs the column {column!r}, which the snapshot lacks")
    # Rows without a time go first: they can only be trained on, never judged as the newest.
    ordered = frame.sort_values(column, kind="stable", na_position="first")
    return ordered.iloc[:n_train], ordered.iloc[n_train:]


def _cannot_stratify(y: np.ndarray[Any, Any], n_train: int, n_holdout: int) -> str | None:
    labels, counts = np.unique(y, return_counts=True)
    smallest = int(counts.argmin())
    if counts[smallest] < 2:
        return (
            f"class {_show(labels[smallest])} has {counts[smallest]} row, "
            "and a stratified split needs at least 2 per class"
        )
    if n_holdout < len(labels):
        return f"a holdout of {n_holdout} row(s) cannot hold all {len(labels)} classes"
    if n_train < len(labels):
        return f"a training part of {n_train} row(s) cannot hold all {len(labels)} classes"
    return None


def _require_classes(y: np.ndarray[Any, Any], rows: int, what: str, where: str) -> None:
    labels = np.unique(y)
    if len(labels) < 2:
        raise TrainingError(
            f"{what} has a single class ({_show(labels[0])}) in {rows} rows of {where}; "
            "classification needs at least two classes"
        )


def _show(label: Any) -> str:
    return repr(label.item() if isinstance(label, np.generic) else label)
