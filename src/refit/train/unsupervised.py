"""What clustering and anomaly metrics measure rows in, whatever the model: the evaluation
space, and the uniform points that give the volumes of a detector's level sets.

The evaluation space depends only on the rows, never on a model, so the champion's and the
challenger's answers on the same holdout are judged on the same criterion. It is refit's
standard encoding of the declared features, fitted on the evaluated rows themselves: numbers
(and bools, as 0 and 1) with missing values imputed by the median, then standardised (a
constant column is all zeros); categories one-hot, a missing one its own category
(`refit.values.MISSING_CATEGORY`).

`uniform_rows` draws points uniformly in the rows' bounding box, as inputs a model takes: each
number uniform between its lowest and its highest value among the rows (a standardised
column's box is the same box, scaled), each category and bool one of the values seen there,
all equally likely. The box has volume 1: a level set's volume is the share of these points in
it. Both are seeded (`refit._metrics_unsupervised.SEED`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from refit._metrics_unsupervised import SEED, UNIFORM_ROWS
from refit.spec import Spec, Task
from refit.values import MISSING_CATEGORY, category_text

Array = np.ndarray[Any, Any]


def evaluation_space(rows: pd.DataFrame) -> Array:
    """The rows' features in the evaluation space ([N, D] float64; see the module)."""
    parts: list[Array] = []
    for name in rows.columns:
        column = rows[name]
        if _numeric(column):
            values = column.to_numpy(dtype=np.float64, na_value=np.nan)
            missing = np.isnan(values)
            if missing.all():
                continue
            values = np.where(missing, np.median(values[~missing]), values)
            spread = values.std()
            parts.append(
                ((values - values.mean()) / spread if spread > 0 else values * 0.0)[:, None]
            )
        else:
            text = [MISSING_CATEGORY if m else category_text(v) for v, m in _cells(column)]
            _, codes = np.unique(np.asarray(text, dtype=object), return_inverse=True)
            parts.append(np.eye(int(codes.max()) + 1)[codes])
    if not parts:
        return np.zeros((len(rows), 1))
    return np.hstack(parts)


def uniform_rows(rows: pd.DataFrame, n: int = UNIFORM_ROWS, seed: int = SEED) -> pd.DataFrame:
    """`n` points drawn uniformly in the bounding box of `rows` (see the module), typed as
    `rows` are."""
    generator = np.random.default_rng(seed)
    columns: dict[str, pd.Series[Any]] = {}
    for name in rows.columns:
        column = rows[name]
        seen = column.dropna()
        if not len(seen):
            columns[name] = pd.Series([None] * n, dtype=column.dtype)
        elif _numeric(column) and not pd.api.types.is_bool_dtype(column.dtype):
            values = seen.to_numpy(dtype=np.float64)
            drawn = generator.uniform(values.min(), values.max(), n)
            columns[name] = pd.Series(drawn, dtype=np.float64)
        else:
            choices = pd.unique(seen.to_numpy(dtype=object))
            picks = choices[generator.integers(0, len(choices), n)]
            columns[name] = pd.Series(picks, dtype=column.dtype)
    return pd.DataFrame(columns, index=pd.RangeIndex(n))


def search_curve(spec: Spec, tuning: dict[str, Any] | None) -> dict[str, float]:
    """The curve of a search over one parameter (a clustering's k) as metric entries:
    `{"silhouette@n_clusters=2": 0.41, ...}`, from a version's `tuning` record; empty for a
    search over several parameters, or none. (A clustering's only: it is the search of k
    that replaces learning a target; a supervised search's trials are in `tuning` alone.)"""
    if not tuning or spec.model.task is not Task.CLUSTERING:
        return {}
    metric = tuning["metric"]
    trials = [t for t in tuning.get("trials", []) if t.get("state") == "complete"]
    names = {name for t in trials for name in t.get("params", {})}
    if len(names) != 1:
        return {}
    (name,) = names
    points = sorted(
        (t["params"][name], float(t["score"])) for t in trials if t.get("score") is not None
    )
    return {f"{metric}@{name}={value}": round(score, 6) for value, score in points}


def _numeric(column: pd.Series[Any]) -> bool:
    return pd.api.types.is_numeric_dtype(column.dtype) or pd.api.types.is_bool_dtype(column.dtype)


def _cells(column: pd.Series[Any]) -> zip[tuple[Any, bool]]:
    return zip(column.tolist(), column.isna().tolist(), strict=True)
