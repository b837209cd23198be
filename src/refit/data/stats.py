"""Per-column statistics of a snapshot: the reference that drift detection compares with.

`column_stats` returns plain JSON values (no NaN: a missing number is `None`). Each column's
entry has a `kind`:

- `numeric` (float and int features, a numeric target): `count` (non-missing values), `nulls`,
  `mean`, `std` (sample, ddof=1), `min`, `max`, `quantiles` `p01` ... `p99` (linear
  interpolation), `histogram` with 11 `edges` from min to max and 10 `counts`. A constant
  column gets edges from value - 0.5 to value + 0.5, so its count sits in the middle bins.
- `categorical` (category and bool features, a text target): `count`, `nulls`, `frequencies`
  of the 50 most common values (most common first, ties by value; bools as "true"/"false")
  and `other`, the count of the remaining values.
- `time` (the time column): `count`, `nulls`, `min` and `max` as ISO 8601 strings.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from refit.errors import DataError
from refit.spec import DataSpec

TOP_VALUES = 50
BINS = 10
QUANTILES = {
    "p01": 0.01,
    "p05": 0.05,
    "p25": 0.25,
    "p50": 0.5,
    "p75": 0.75,
    "p95": 0.95,
    "p99": 0.99,
}


def column_stats(frame: pd.DataFrame, data: DataSpec) -> dict[str, dict[str, Any]]:
    """Statistics of every feature, the target and the time column of validated rows."""
    kinds = {
        name: "numeric" if f.type.numeric else "categorical" for name, f in data.features.items()
    }
    if data.target is not None:
        kinds[data.target] = "numeric" if _is_numeric(frame.get(data.target)) else "categorical"
    if data.time_column is not None:
        kinds[data.time_column] = "time"
    missing = [name for name in kinds if name not in frame.columns]
    if missing:
        raise DataError(f"no column {', '.join(missing)} to describe")
    describe = {"numeric": _numeric, "categorical": _categorical, "time": _time}
    return {name: describe[kind](frame[name]) for name, kind in kinds.items()}


def _is_numeric(column: pd.Series | None) -> bool:
    return (
        column is not None
        and pd.api.types.is_numeric_dtype(column.dtype)
        and not pd.api.types.is_bool_dtype(column.dtype)
    )


def _numeric(column: pd.Series) -> dict[str, Any]:
    values = column.to_numpy(dtype="float64", na_value=np.nan)
    values = values[~np.isnan(values)]
    stats: dict[str, Any] = {
        "kind": "numeric",
        "count": len(values),
        "nulls": len(column) - len(values),
    }
    if not len(values):
        return {
            **stats,
            **dict.fromkeys(("mean", "std", "min", "max")),
            "quantiles": dict.fromkeys(QUANTILES),
            "histogram": None,
        }
    low, high = float(values.min()), float(values.max())
    if low == high:
        low, high = low - 0.5, high + 0.5
    counts, edges = np.histogram(values, bins=BINS, range=(low, high))
    quantiles = np.quantile(values, list(QUANTILES.values()))
    return {
        **stats,
        "mean": _number(values.mean()),
        "std": _number(values.std(ddof=1)) if len(values) > 1 else None,
        "min": _number(values.min()),
        "max": _number(values.max()),
        "quantiles": {key: _number(q) for key, q in zip(QUANTILES, quantiles, strict=True)},
        "histogram": {"edges": [_number(e) for e in edges], "counts": [int(c) for c in counts]},
    }


def _categorical(column: pd.Series) -> dict[str, Any]:
    present = column.dropna()
    if pd.api.types.is_bool_dtype(column.dtype):
        present = present.map({True: "true", False: "false"})
    counts = present.astype("str").value_counts(sort=False)
    ranked = pd.DataFrame({"value": counts.index, "n": counts.to_numpy()}).sort_values(
        ["n", "value"], ascending=[False, True], kind="stable"
    )
    top = ranked.head(TOP_VALUES)
    return {
        "kind": "categorical",
        "count": len(present),
        "nulls": len(column) - len(present),
        "frequencies": {str(v): int(n) for v, n in zip(top["value"], top["n"], strict=True)},
        "other": int(ranked["n"].iloc[TOP_VALUES:].sum()),
    }


def _time(column: pd.Series) -> dict[str, Any]:
    present = column.dropna()
    return {
        "kind": "time",
        "count": len(present),
        "nulls": len(column) - len(present),
        "min": present.min().isoformat() if len(present) else None,
        "max": present.max().isoformat() if len(present) else None,
    }


def _number(value: Any) -> float | None:
    number = float(value)
    return number if math.isfinite(number) else None
