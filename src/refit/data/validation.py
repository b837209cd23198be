"""Checking a batch's rows against the spec's schema and giving them their types.

A batch without a required column is refused whole (`DataError`); otherwise each row is either
valid, with every value coerced to its column's type, or rejected with the reasons why. A
feature's values are coerced by `refit.values`, the rule the server applies too; the work is
column-wise (typed columns on arrays, text once per distinct value), so a million rows take
seconds.

The types of `Validated.valid` are chosen to survive a Parquet round trip unchanged and to be
consumed by scikit-learn as they are (`SimpleImputer`, `OneHotEncoder`, the estimators); a
feature's and the time column's come from `refit.columns`:

======================  ============================================================
column                  dtype
======================  ============================================================
float feature           `float64` (missing: NaN)
int feature             `Int64` when nullable (missing: <NA>), else `int64`
bool feature            `boolean` (missing: <NA>)
category feature        `str`, pandas' string dtype (missing: NaN); a number arrives as
                        its text (`refit.values.category_text`: `1.0` -> `"1"`)
target                  `float64` when every value of the batch is a number, else `str`
time column             `datetime64[us, UTC]`; text is read as ISO 8601 (other formats
                        are tried after), naive times are taken as UTC, numbers as Unix
                        seconds
======================  ============================================================

`str` rather than `object` strings: pandas 3 reads strings back from Parquet as `str`, and
scikit-learn's imputers and encoders treat its NaN as missing. Give scikit-learn `boolean`
columns with the numeric ones (they read as 0/1): a transformer that receives `boolean` and
`str` columns together sees one object array holding `<NA>`, which `SimpleImputer` rejects.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from refit.columns import TIME_DTYPE, feature_dtype
from refit.errors import DataError
from refit.spec import CsvSource, DataSpec, Feature, FeatureType
from refit.values import NOT_ALLOWED, WRONG_TYPE, category_text, coerce_column

_LISTED_VALUES = 10


@dataclass
class Validated:
    """The rows of a batch split into valid rows (typed) and rejected rows (raw, with reasons)."""

    valid: pd.DataFrame
    """Features in spec order, then the target, then the time column, typed as documented."""
    rejects: pd.DataFrame
    """Every input column as text, plus `_row` (position in the batch) and `_reason`."""


def validate(frame: pd.DataFrame, data: DataSpec) -> Validated:
    """Coerce each row to the schema of `data`; rows that cannot be are rejected."""
    required = [*data.features, *([] if data.target is None else [data.target])]
    if data.time_column is not None:
        required.append(data.time_column)
    missing = [name for name in required if name not in frame.columns]
    if missing:
        found = ", ".join(str(c) for c in frame.columns) or "none"
        raise DataError(
            f"the batch has no column {', '.join(repr(m) for m in missing)} "
            f"(required by the spec); its columns are: {found}"
        )
    raw = frame.reset_index(drop=True)
    problems = _Problems(len(raw))
    typed: dict[str, pd.Series] = {}
    decimal = data.source.decimal if isinstance(data.source, CsvSource) else "."
    for name, feature in data.features.items():
        typed[name] = _feature(name, raw[name], feature, decimal, problems)
    if data.target is not None:
        typed[data.target] = _target(data.target, raw[data.target], problems)
    if data.time_column is not None:
        typed[data.time_column] = _time(data.time_column, raw[data.time_column], problems)
    bad = problems.mask
    valid = pd.DataFrame(typed)[~bad].reset_index(drop=True)
    rejects = raw[bad].astype("str").reset_index(drop=True)
    rejects["_row"] = np.flatnonzero(bad)
    rejects["_reason"] = problems.reasons()
    return Validated(valid, rejects)


class _Problems:
    """Row-level reasons gathered column by column: a mask and the texts for masked rows."""

    def __init__(self, rows: int) -> None:
        self.mask = np.zeros(rows, dtype=bool)
        self._parts: list[pd.Series] = []

    def add(self, where: np.ndarray, column: str, raw: pd.Series, problem: str) -> None:
        """Reject rows `where`: `column: '<raw value>' <problem>`."""
        if not where.any():
            return
        self.mask |= where
        shown = raw[where].astype("str").fillna("")
        self._parts.append(f"{column}: '" + shown + "' " + problem)

    def add_text(self, where: np.ndarray, text: str) -> None:
        if not where.any():
            return
        self.mask |= where
        self._parts.append(pd.Series(text, index=np.flatnonzero(where)))

    def reasons(self) -> pd.Series:
        """The reasons of each rejected row, in row order, joined with "; "."""
        text: pd.Series[str] = pd.Series(np.nan, index=np.flatnonzero(self.mask), dtype="str")
        for part in self._parts:
            before = text.loc[part.index]
            text.loc[part.index] = (before + "; " + part).where(before.notna(), part)
        return text.reset_index(drop=True)


def _blank(raw: pd.Series) -> np.ndarray:
    """Missing values: NaN, None, NaT, <NA>, and empty or blank text."""
    missing = raw.isna().to_numpy(dtype=bool)
    if pd.api.types.is_object_dtype(raw.dtype) or pd.api.types.is_string_dtype(raw.dtype):
        blank = raw.astype("str").str.strip() == ""
        missing = missing | blank.to_numpy(dtype=bool, na_value=True)
    return missing


_WRONG_TYPE = {
    FeatureType.FLOAT: "is not a number",
    FeatureType.INT: "is not a number",
    FeatureType.BOOL: "is not a boolean (expected true/false, yes/no or 1/0)",
    FeatureType.CATEGORY: "is not text or a number",
}


def _feature(
    name: str, raw: pd.Series, feature: Feature, decimal: str, problems: _Problems
) -> pd.Series:
    column = coerce_column(raw, feature, decimal)
    missing = column.missing
    if not feature.nullable:
        problems.add_text(missing, f"{name}: missing value (the feature is not nullable)")
    refused = column.problems[~missing]
    for problem in pd.unique(refused[refused != None]):  # noqa: E711
        text = _WRONG_TYPE[feature.type] if problem == WRONG_TYPE else f"is {problem}"
        if problem == NOT_ALLOWED:
            text = f"is not one of the allowed values: {_allowed(feature.values or [])}"
        problems.add(~missing & (column.problems == problem), name, raw, text)
    values, dtype = column.values, feature_dtype(feature)
    if feature.type is FeatureType.INT and feature.nullable:
        return pd.Series(pd.arrays.IntegerArray(values, missing.copy()), dtype=dtype)
    if feature.type is FeatureType.BOOL:
        return pd.Series(pd.arrays.BooleanArray(values, missing.copy()), dtype=dtype)
    return pd.Series(values, dtype=dtype)


def _allowed(values: list[str]) -> str:
    shown = ", ".join(values[:_LISTED_VALUES])
    if len(values) > _LISTED_VALUES:
        shown += f", ... ({len(values)} values)"
    return shown


def _text(raw: pd.Series, missing: np.ndarray) -> pd.Series:
    """A target's values as text: its category text (see `refit.values.category_text`)."""
    if pd.api.types.is_bool_dtype(raw.dtype):
        text = raw.astype("str")
    else:
        text = pd.Series([category_text(_plain(v)) for v in raw], dtype="str")
    return text.mask(missing)


def _plain(value: object) -> object:
    return value.item() if isinstance(value, np.generic) else value


def _target(name: str, raw: pd.Series, problems: _Problems) -> pd.Series:
    missing = _blank(raw)
    problems.add_text(missing, f"{name}: missing target")
    if pd.api.types.is_bool_dtype(raw.dtype):
        return _text(raw, missing)
    numbers = pd.to_numeric(raw, errors="coerce").to_numpy(
        dtype="float64", na_value=np.nan, copy=True
    )
    if np.isnan(numbers[~missing]).any():
        return _text(raw, missing)
    problems.add(np.isinf(numbers), name, raw, "is not a finite number")
    numbers[missing] = np.nan
    return pd.Series(numbers, dtype="float64")


def _time(name: str, raw: pd.Series, problems: _Problems) -> pd.Series:
    missing = _blank(raw)
    problems.add_text(missing, f"{name}: missing timestamp")
    if isinstance(raw.dtype, pd.DatetimeTZDtype):
        times = raw.dt.tz_convert("UTC")
    elif pd.api.types.is_datetime64_dtype(raw.dtype):
        times = raw.dt.tz_localize("UTC")
    elif pd.api.types.is_numeric_dtype(raw.dtype) and not pd.api.types.is_bool_dtype(raw.dtype):
        times = pd.to_datetime(raw, unit="s", utc=True, errors="coerce")
    else:
        text = raw.astype("str").mask(missing)
        times = pd.to_datetime(text, utc=True, errors="coerce", format="ISO8601")
        retry = ~missing & times.isna().to_numpy(dtype=bool)
        if retry.any():
            times[retry] = pd.to_datetime(text[retry], utc=True, errors="coerce", format="mixed")
    utc: pd.Series = times.astype(TIME_DTYPE)
    problems.add(~missing & utc.isna().to_numpy(dtype=bool), name, raw, "is not a timestamp")
    return utc
