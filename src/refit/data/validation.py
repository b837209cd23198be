"""Checking a batch's rows against the spec's schema and giving them their types.

A batch without a required column is refused whole (`DataError`); otherwise each row is either
valid, with every value coerced to its column's type, or rejected with the reasons why. All the
work is column-wise on arrays, so a million rows take seconds.

The types of `Validated.valid` are chosen to survive a Parquet round trip unchanged and to be
consumed by scikit-learn as they are (`SimpleImputer`, `OneHotEncoder`, the estimators):

======================  ============================================================
column                  dtype
======================  ============================================================
float feature           `float64` (missing: NaN)
int feature             `Int64` when nullable (missing: <NA>), else `int64`
bool feature            `boolean` (missing: <NA>)
category feature        `str`, pandas' string dtype (missing: NaN); a number arrives as
                        its text and an integral float without `.0` (`1.0` -> `"1"`)
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

from refit.errors import DataError
from refit.spec import DataSpec, Feature, FeatureType

_TRUE = ("true", "yes", "1")
_FALSE = ("false", "no", "0")
_LISTED_VALUES = 10
# Integral floats at or past 2**53 are not exact, so they are no safe category text or int.
_EXACT = 2.0**53


@dataclass
class Validated:
    """The rows of a batch split into valid rows (typed) and rejected rows (raw, with reasons)."""

    valid: pd.DataFrame
    """Features in spec order, then the target, then the time column, typed as documented."""
    rejects: pd.DataFrame
    """Every input column as text, plus `_row` (position in the batch) and `_reason`."""


def validate(frame: pd.DataFrame, data: DataSpec) -> Validated:
    """Coerce each row to the schema of `data`; rows that cannot be are rejected."""
    required = [*data.features, data.target]
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
    for name, feature in data.features.items():
        typed[name] = _feature(name, raw[name], feature, problems)
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


def _feature(name: str, raw: pd.Series, feature: Feature, problems: _Problems) -> pd.Series:
    missing = _blank(raw)
    if not feature.nullable:
        problems.add_text(missing, f"{name}: missing value (the feature is not nullable)")
    if feature.type is FeatureType.FLOAT:
        return pd.Series(_numbers(name, raw, missing, feature, problems), dtype="float64")
    if feature.type is FeatureType.INT:
        return _integers(name, raw, missing, feature, problems)
    if feature.type is FeatureType.BOOL:
        return _booleans(name, raw, missing, problems)
    text = _text(raw, missing)
    if feature.values is not None:
        outside = ~missing & ~text.isin(feature.values).to_numpy(dtype=bool)
        allowed = ", ".join(feature.values[:_LISTED_VALUES])
        if len(feature.values) > _LISTED_VALUES:
            allowed += f", ... ({len(feature.values)} values)"
        problems.add(outside, name, raw, f"is not one of the allowed values: {allowed}")
    return text


def _numbers(
    name: str, raw: pd.Series, missing: np.ndarray, feature: Feature | None, problems: _Problems
) -> np.ndarray:
    """float64 values with NaN where missing or rejected; rejects non-numbers and bounds."""
    numbers = pd.to_numeric(raw, errors="coerce")
    values = numbers.to_numpy(dtype="float64", na_value=np.nan, copy=True)
    values[missing] = np.nan
    problems.add(~missing & np.isnan(values), name, raw, "is not a number")
    infinite = np.isinf(values)
    problems.add(infinite, name, raw, "is not a finite number")
    if feature is not None and feature.min is not None:
        below = ~infinite & (values < feature.min)
        problems.add(below, name, raw, f"is below the minimum {feature.min:g}")
    if feature is not None and feature.max is not None:
        above = ~infinite & (values > feature.max)
        problems.add(above, name, raw, f"is above the maximum {feature.max:g}")
    return values


def _integers(
    name: str, raw: pd.Series, missing: np.ndarray, feature: Feature, problems: _Problems
) -> pd.Series:
    if pd.api.types.is_integer_dtype(raw.dtype):
        exact = raw.to_numpy(dtype="int64", na_value=0)
        _numbers(name, raw, missing, feature, problems)
    else:
        values = _numbers(name, raw, missing, feature, problems)
        finite = np.isfinite(values)
        fraction = finite & (np.floor(np.where(finite, values, 0)) != values)
        problems.add(fraction, name, raw, "is not a whole number")
        problems.add(finite & (np.abs(values) >= _EXACT), name, raw, "is too large an integer")
        exact = np.where(finite & ~fraction & (np.abs(values) < _EXACT), values, 0).astype("int64")
    if not feature.nullable:
        return pd.Series(exact, dtype="int64")
    return pd.Series(pd.arrays.IntegerArray(exact, missing.copy()))


def _booleans(name: str, raw: pd.Series, missing: np.ndarray, problems: _Problems) -> pd.Series:
    if pd.api.types.is_bool_dtype(raw.dtype):
        values = raw.to_numpy(dtype=bool, na_value=False)
    else:
        if pd.api.types.is_numeric_dtype(raw.dtype):
            numbers = raw.to_numpy(dtype="float64", na_value=np.nan)
            true, false = numbers == 1, numbers == 0
        else:
            words = raw.astype("str").str.strip().str.lower()
            true = words.isin(_TRUE).to_numpy(dtype=bool)
            false = words.isin(_FALSE).to_numpy(dtype=bool)
            # Numbers written as text, such as "1.0", only for what the words left over.
            rest = ~missing & ~true & ~false
            if rest.any():
                numbers = np.full(len(raw), np.nan)
                numbers[rest] = pd.to_numeric(raw[rest], errors="coerce").to_numpy(
                    dtype="float64", na_value=np.nan
                )
                true, false = true | (numbers == 1), false | (numbers == 0)
        unknown = ~missing & ~true & ~false
        problems.add(unknown, name, raw, "is not a boolean (expected true/false, yes/no or 1/0)")
        values = true
    return pd.Series(pd.arrays.BooleanArray(values, missing.copy()))


def _text(raw: pd.Series, missing: np.ndarray) -> pd.Series:
    """Values as text; numbers as they read, integral floats without `.0`."""
    if pd.api.types.is_float_dtype(raw.dtype):
        values = raw.to_numpy(dtype="float64", na_value=np.nan)
        integral = np.isfinite(values) & (np.floor(values) == values) & (np.abs(values) < _EXACT)
        whole = np.where(integral, values, 0).astype("int64").astype(str)
        text = pd.Series(np.where(integral, whole, values.astype(str)), dtype="str")
    elif raw.dtype == object:
        text = raw.map(_one_text, na_action="ignore").astype("str")
    else:
        text = raw.astype("str")
    return text.mask(missing)


def _one_text(value: object) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < _EXACT:
        return str(int(value))
    return str(value)


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
    utc: pd.Series = times.astype("datetime64[us, UTC]")
    problems.add(~missing & utc.isna().to_numpy(dtype=bool), name, raw, "is not a timestamp")
    return utc
