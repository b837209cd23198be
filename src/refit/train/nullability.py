"""Which nullable features a model really takes missing: the probe behind a truthful signature.

A feature is nullable by default in the spec, but a model trained elsewhere or returned by a
user's function may not take a missing value (a StandardScaler and LogisticRegression pipeline
with no imputer raises `Input X contains NaN`). So at registration every nullable feature is
probed on the model: one batched call on `probe_rows`, each a complete holdout row with one
feature missing. A feature whose row the model refuses (it raises, or answers a prediction or a
probability that is NaN or infinite) is made not nullable in the signature
(`Signature.requiring`), so that a server answers a null there with 422 naming the field rather
than failing. When the call fails as a whole, its rows are split in halves until each refused
feature is found (at most 2n - 1 calls for n features).

`truthful` does all this for a version about to be registered. A version's ONNX graph meets
the same rows in its parity check (`refit.train.onnx_export`), so
every runtime that serves the version is probed on the missing values the server accepts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from refit.errors import TrainingError
from refit.signature import DISTANCES, Output, Signature, anomaly_score
from refit.spec import Task

Answer = Callable[[pd.DataFrame], np.ndarray[Any, Any]]
"""A runtime's answer to rows: for each row, whether its answer is finite; raises when the
runtime refuses the rows."""

FIX = (
    "to take missing values there, put an imputer before the estimator in the pipeline (e.g. "
    "sklearn.impute.SimpleImputer), or declare the feature `nullable: false` in data.features"
)
"""How to make a model take the missing values it refused."""


def blanked(column: pd.Series[Any], rows: Sequence[int]) -> pd.Series[Any]:
    """`column` with the values at positions `rows` missing, in a dtype that can hold them
    (a numpy int or bool column becomes pandas' nullable Int64 or boolean)."""
    if pd.api.types.is_bool_dtype(column.dtype):
        column = column.astype("boolean")
    elif pd.api.types.is_integer_dtype(column.dtype):
        column = column.astype("Int64")
    else:
        column = column.copy()
    if len(rows):
        # A missing category is NaN, as a server types it; pandas' own NA for the others.
        missing: Any = np.nan if column.dtype == object else None
        column.iloc[list(rows)] = missing
    return column


def probe_rows(holdout: pd.DataFrame, names: Sequence[str]) -> pd.DataFrame:
    """One row per feature of `names`: a complete row of `holdout` (else its first row),
    with that feature missing."""
    complete = holdout.notna().all(axis=1).to_numpy()
    base = holdout[complete].iloc[:1] if complete.any() else holdout.iloc[:1]
    rows = pd.concat([base] * len(names), ignore_index=True)
    for i, name in enumerate(names):
        rows[name] = blanked(rows[name], [i])
    return rows


def finite_answers(model: Any, output: Output) -> Answer:
    """The answer of a model with a scikit-learn face, as a server asks it: its predictions,
    its probabilities when the signature gives them (a classifier's, a mixture's), a
    clustering's distances, an anomaly detector's score."""
    probabilities = output.task is not Task.REGRESSION and output.probabilities
    distances = output.scores == DISTANCES

    def answer(rows: pd.DataFrame) -> np.ndarray[Any, Any]:
        if output.task is Task.ANOMALY:
            return _finite(anomaly_score(model, rows), len(rows))
        finite = _finite(np.asarray(model.predict(rows)), len(rows))
        if probabilities:
            finite &= _finite(np.asarray(model.predict_proba(rows)), len(rows))
        if distances:
            finite &= _finite(np.asarray(model.transform(rows), dtype=np.float64), len(rows))
        return finite

    return answer


def _finite(values: np.ndarray[Any, Any], rows: int) -> np.ndarray[Any, Any]:
    if len(values) != rows:
        raise ValueError(f"{len(values)} answers for {rows} rows")
    if values.dtype.kind not in "fc":
        return np.ones(rows, dtype=bool)
    finite: np.ndarray[Any, Any] = np.isfinite(values.reshape(rows, -1)).all(axis=1)
    return finite


def refused(answer: Answer, rows: pd.DataFrame, names: Sequence[str]) -> dict[str, str]:
    """The features of `names` (row i of `rows` has `names[i]` missing) whose row `answer`
    refuses, each with why: one call, and calls on halves only where a call fails."""
    found: dict[str, str] = {}
    groups = [list(range(len(names)))] if len(names) else []
    while groups:  # each failing group of k rows becomes two of about k/2: 2n - 1 calls at most
        group = groups.pop()
        try:
            finite = answer(rows.iloc[group])
        except Exception as exc:
            if len(group) == 1:
                found[names[group[0]]] = f"the model fails ({_error(exc)})"
            else:
                groups += [group[len(group) // 2 :], group[: len(group) // 2]]
            continue
        for i, ok in zip(group, finite.tolist(), strict=True):
            if not ok:
                found[names[i]] = "the model answers NaN or infinity"
    return {name: found[name] for name in names if name in found}


def describe(refusals: dict[str, str]) -> str:
    """One sentence about the features a model refused missing, and how to fix it."""
    by_reason: dict[str, list[str]] = {}
    for name, reason in refusals.items():
        by_reason.setdefault(reason, []).append(name)
    parts = [
        f"{reason} when {'any of ' if len(names) > 1 else ''}{', '.join(map(repr, names))} "
        "is missing"
        for reason, names in by_reason.items()
    ]
    return (
        f"{len(refusals)} feature(s) made not nullable, so a null there is refused with 422: "
        f"{'; '.join(parts)}; {FIX}"
    )


def _error(exc: BaseException) -> str:
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def truthful(model: Any, signature: Signature, holdout: pd.DataFrame) -> tuple[Signature, str]:
    """`signature` with the nullable features `model` refuses missing made not nullable, and
    a note of them ("" when there are none). A feature refused where the holdout itself has
    missing values fails: the model cannot score the rows it is judged on."""
    names = [c.name for c in signature.inputs if c.nullable]
    if not names:
        return signature, ""
    refusals = refused(finite_answers(model, signature.output), probe_rows(holdout, names), names)
    if not refusals:
        return signature, ""
    lacking = {name: int(holdout[name].isna().sum()) for name in refusals}
    lacking = {name: count for name, count in lacking.items() if count}
    if lacking:
        counts = ", ".join(f"{name!r} in {count}" for name, count in lacking.items())
        raise TrainingError(
            f"the model cannot take a missing value ({refusals[next(iter(lacking))]}), and "
            f"holdout rows lack some: {counts}; {FIX}"
        )
    return signature.requiring(refusals), describe(refusals)
