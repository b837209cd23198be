"""What a feature's value means: one rule per feature type, for ingest, training and serving.

A value arrives as JSON gives it (a bool, a number, text), as a CSV cell (text) or in a typed
column of a file (Parquet, SQL). Text is read the same wherever it comes from, so a CSV cell at
ingest, a cell of a CSV request and a JSON string mean the same thing:

==========  ==============================================  ==================================
feature     takes                                           refuses
==========  ==============================================  ==================================
float       numbers; text that is a decimal number          bools, other text, NaN and
            (`1.5`, ` -2 `, `1e3`)                          infinities, numbers out of
                                                            `min`/`max`
int         whole numbers (`3`, `3.0`, text `"3"`,          fractions, bools, numbers out of
            `"3.0"`), within 64 bits                        the 64-bit range or `min`/`max`
bool        `true`/`false`; the words true, false, yes,     anything else (`2`, `"maybe"`)
            no (any case, spaces around ignored); the
            numbers 1 and 0, written as numbers or text
category    text as written; a number as its shortest       bools, NaN and infinities, the
            text: integers (and integral floats below       text `__missing__` (it stands for
            2**53) without `.0`, others as Python's         a missing value), values outside
            `repr` (`0.5`, `1e+20`)                         the declared `values`
==========  ==============================================  ==================================

Missing: null (None) and text that is empty or only spaces, for every type; whether it is
allowed is the feature's `nullable`. Text such as `"n/a"` or `"NaN"` is no missing value unless
a CSV source lists it in `na_values`. In a typed column of a file, NaN is pandas' missing value
and is taken as missing too.

`coercer` is the rule for one value (the server's per-value checks); `coerce_column` applies the
same rule to a whole pandas column (ingest), value by value for text and at array speed for
typed columns. `tests/test_values.py` runs one table of cases through every path.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from refit.spec import FeatureType

if TYPE_CHECKING:
    import pandas as pd

MISSING_CATEGORY = "__missing__"
"""The category that stands for a missing value of a category feature, in training and in ONNX
graphs; as a value it is refused."""
TRUE_WORDS = frozenset({"true", "yes", "1"})
FALSE_WORDS = frozenset({"false", "no", "0"})
EXACT = 2**53
"""Integral floats at or past this are no exact integers: no category text without `.0`."""
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_FLOAT_MAX = int(sys.float_info.max)

WRONG_TYPE = "wrong type"
NOT_FINITE = "not a finite number"
NOT_INTEGER = "not an integer"
OUT_OF_INT64 = "outside the 64-bit integer range"
TOO_LARGE = "too large for a 64-bit float"
NOT_ALLOWED = "not one of the allowed categories"
RESERVED = f"reserved for a missing value ({MISSING_CATEGORY})"

Coerced = tuple[Any, str | None]
"""A coerced value and None, or None and the problem."""
Check = Callable[[Any], Coerced]


class Typed(Protocol):
    """What a rule needs of a column: a spec's `Feature` or a signature's `InputColumn`."""

    @property
    def type(self) -> FeatureType: ...
    @property
    def min(self) -> float | None: ...
    @property
    def max(self) -> float | None: ...
    @property
    def values(self) -> list[str] | None: ...


def is_missing(value: Any) -> bool:
    """None, or text that is empty or only spaces."""
    return value is None or (isinstance(value, str) and not value.strip())


_INTEGER = re.compile(r"\s*[+-]?\d+\s*", re.ASCII)


@cache
def _number_pattern(decimal: str) -> re.Pattern[str]:
    point = re.escape(decimal)
    return re.compile(rf"\s*[+-]?(?:\d+(?:{point}\d*)?|{point}\d+)(?:[eE][+-]?\d+)?\s*", re.ASCII)


def parse_number(text: str, decimal: str = ".") -> int | float | None:
    """The number a text writes (`"3"` -> 3, `"1.5"` -> 1.5, `"1e3"` -> 1000.0), or None.

    Integers written without a point or exponent stay exact ints. `decimal` is the decimal
    mark (`","` for `1,5`); no thousands separators, no `inf`, `nan` or `_`.
    """
    if _INTEGER.fullmatch(text):
        try:
            return int(text)
        except ValueError:  # more digits than Python converts: as a float, it is infinite
            return math.inf
    if _number_pattern(decimal).fullmatch(text) is None:
        return None
    return float(text.strip().replace(decimal, "."))


def category_text(value: Any) -> str:
    """The text of a category value: text as it is, an integral number without `.0`."""
    if isinstance(value, str):
        return value
    if isinstance(value, float) and value.is_integer() and abs(value) < EXACT:
        return str(int(value))
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def coercer(column: Typed, decimal: str = ".") -> Check:
    """The rule of `column` for one value that is not missing (see `is_missing`)."""
    if column.type is FeatureType.FLOAT:
        return _number(column, False, decimal)
    if column.type is FeatureType.INT:
        return _number(column, True, decimal)
    if column.type is FeatureType.BOOL:
        return lambda value: _bool(value, decimal)
    return _category(column)


def _bounds(column: Typed, value: float) -> str | None:
    if column.min is not None and value < column.min:
        return f"below the minimum {column.min:g}"
    if column.max is not None and value > column.max:
        return f"above the maximum {column.max:g}"
    return None


def _number(column: Typed, integer: bool, decimal: str) -> Check:
    def check(value: Any) -> Coerced:
        value = _plain(value)
        if isinstance(value, str):
            value = parse_number(value, decimal)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None, WRONG_TYPE
        if isinstance(value, int) and not integer and not -_FLOAT_MAX <= value <= _FLOAT_MAX:
            return None, TOO_LARGE
        if isinstance(value, float) and not math.isfinite(value):
            return None, NOT_FINITE
        if integer and isinstance(value, float) and not value.is_integer():
            return None, NOT_INTEGER
        if integer and not INT64_MIN <= value <= INT64_MAX:
            return None, OUT_OF_INT64
        problem = _bounds(column, value)
        if problem is not None:
            return None, problem
        return (int(value) if integer else float(value)), None

    return check


def _bool(value: Any, decimal: str) -> Coerced:
    value = _plain(value)
    if isinstance(value, bool):
        return value, None
    if isinstance(value, str):
        word = value.strip().lower()
        if word in TRUE_WORDS or word in FALSE_WORDS:
            return word in TRUE_WORDS, None
        value = parse_number(value, decimal)
    if isinstance(value, (int, float)) and value in (0, 1):
        return value == 1, None
    return None, WRONG_TYPE


def _category(column: Typed) -> Check:
    allowed = set(column.values) if column.values is not None else None

    def check(value: Any) -> Coerced:
        value = _plain(value)
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            return None, WRONG_TYPE
        if isinstance(value, float) and not math.isfinite(value):
            return None, NOT_FINITE
        text = category_text(value)
        if text == MISSING_CATEGORY:
            return None, RESERVED
        if allowed is not None and text not in allowed:
            return None, NOT_ALLOWED
        return text, None

    return check


# --- whole columns (ingest) -----------------------------------------------------------------


@dataclass
class Column:
    """A column coerced by `coerce_column`."""

    values: np.ndarray[Any, Any]
    """float64 (NaN where missing or refused), int64 or bool (0/False there), or object text
    (None there), by the feature's type."""
    missing: np.ndarray[Any, Any]
    """Where the value is missing."""
    problems: np.ndarray[Any, Any]
    """Object array: the problem of each refused value, None elsewhere."""


_DTYPES = {
    FeatureType.FLOAT: np.float64,
    FeatureType.INT: np.int64,
    FeatureType.BOOL: np.bool_,
    FeatureType.CATEGORY: np.object_,
}


def coerce_column(raw: pd.Series[Any], column: Typed, decimal: str = ".") -> Column:
    """`coercer`'s rule applied to every value of `raw`, where pandas' missing values (NaN,
    None, NA, NaT) and blank text are missing."""
    import pandas as pd

    dtype = raw.dtype
    if pd.api.types.is_bool_dtype(dtype) or (
        pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_complex_dtype(dtype)
    ):
        return _typed_column(raw, column, raw.isna().to_numpy(dtype=bool))
    # Text and mixed objects: the one-value rule, once per distinct value. Mixed objects are
    # told apart by type too (pandas takes True, 1 and 1.0 for one value).
    if pd.api.types.infer_dtype(raw, skipna=True) in ("string", "empty"):
        codes, uniques = pd.factorize(raw, use_na_sentinel=True)
    else:
        keys = pd.Series([(type(v), v) if not _na(v) else None for v in raw], dtype=object)
        codes, pairs = pd.factorize(keys, use_na_sentinel=True)
        uniques = pd.Index([value for _, value in pairs], dtype=object)
    check = coercer(column, decimal)
    n = len(uniques)
    values = np.full(n + 1, None, dtype=object)
    problems = np.full(n + 1, None, dtype=object)
    blank = np.zeros(n + 1, dtype=bool)
    blank[n] = True  # pandas' code -1, of its missing values
    for k, value in enumerate(uniques):
        if is_missing(value):
            blank[k] = True
        else:
            values[k], problems[k] = check(value)
    chosen = values[codes]
    kind = column.type
    if kind is not FeatureType.CATEGORY:
        fill = {FeatureType.FLOAT: np.nan, FeatureType.INT: 0, FeatureType.BOOL: False}[kind]
        chosen = np.where(_none(chosen), fill, chosen).astype(_DTYPES[kind])
    return Column(chosen, blank[codes], problems[codes])


def _na(value: Any) -> bool:
    import pandas as pd

    return value is None or (not isinstance(value, (list, dict)) and bool(pd.isna(value)))


def _none(array: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    none: np.ndarray[Any, Any] = array == None  # noqa: E711 (element-wise on objects)
    return none


def _flag(problems: np.ndarray[Any, Any], where: np.ndarray[Any, Any], problem: str) -> None:
    """Give `problem` to the values `where` that have none yet (rules are checked in order)."""
    problems[where & _none(problems)] = problem


def _typed_column(raw: pd.Series[Any], column: Typed, missing: np.ndarray[Any, Any]) -> Column:
    import pandas as pd

    n = len(raw)
    problems = np.full(n, None, dtype=object)
    present = ~missing
    kind = column.type
    if pd.api.types.is_bool_dtype(raw.dtype):
        flags = raw.to_numpy(dtype=bool, na_value=False)
        if kind is FeatureType.BOOL:
            return Column(flags, missing, problems)
        _flag(problems, present, WRONG_TYPE)  # a bool is neither a number nor text
        return Column(_empty(n, kind), missing, problems)
    numbers = raw.to_numpy(dtype=np.float64, na_value=np.nan)
    integers = pd.api.types.is_integer_dtype(raw.dtype)
    exact = raw.to_numpy(dtype=object, na_value=0) if integers else None
    finite = np.isfinite(numbers)
    if kind is FeatureType.BOOL:
        _flag(problems, present & ~((numbers == 0) | (numbers == 1)), WRONG_TYPE)
        return Column(numbers == 1, missing, problems)
    _flag(problems, present & ~finite, NOT_FINITE)
    if kind is FeatureType.CATEGORY:
        return _category_column(numbers, exact, column, present, problems)
    if kind is FeatureType.INT:
        whole = np.floor(np.where(finite, numbers, 0)) == numbers
        _flag(problems, present & ~whole, NOT_INTEGER)
        if exact is not None and str(raw.dtype).lower() == "uint64":
            fits = np.array([v <= INT64_MAX for v in exact], dtype=bool)
        else:
            fits = (numbers >= INT64_MIN) & (numbers < 2.0**63)
        _flag(problems, present & ~fits, OUT_OF_INT64)
    _flag_bounds(problems, present, numbers, column)
    bad = ~_none(problems) | missing
    if kind is FeatureType.FLOAT:
        return Column(np.where(bad, np.nan, numbers), missing, problems)
    source = numbers if exact is None else exact
    return Column(np.where(bad, 0, source).astype(np.int64), missing, problems)


def _empty(n: int, kind: FeatureType) -> np.ndarray[Any, Any]:
    if kind is FeatureType.FLOAT:
        return np.full(n, np.nan)
    if kind is FeatureType.CATEGORY:
        return np.full(n, None, dtype=object)
    return np.zeros(n, dtype=_DTYPES[kind])


def _category_column(
    numbers: np.ndarray[Any, Any],
    exact: np.ndarray[Any, Any] | None,
    column: Typed,
    present: np.ndarray[Any, Any],
    problems: np.ndarray[Any, Any],
) -> Column:
    finite = np.isfinite(numbers)
    if exact is not None:
        text = exact.astype(str).astype(object)
    else:
        whole = finite & (np.floor(np.where(finite, numbers, 0)) == numbers)
        whole &= np.abs(numbers) < EXACT
        text = np.where(whole, numbers, 0).astype(np.int64).astype(str).astype(object)
        rest = np.flatnonzero(present & finite & ~whole)
        text[rest] = [category_text(float(numbers[i])) for i in rest]
    if column.values is not None:
        _flag(problems, present & ~np.isin(text, column.values), NOT_ALLOWED)
    text[~present | ~_none(problems)] = None
    return Column(text, ~present, problems)


def _flag_bounds(
    problems: np.ndarray[Any, Any],
    present: np.ndarray[Any, Any],
    numbers: np.ndarray[Any, Any],
    column: Typed,
) -> None:
    if column.min is not None:
        _flag(problems, present & (numbers < column.min), f"below the minimum {column.min:g}")
    if column.max is not None:
        _flag(problems, present & (numbers > column.max), f"above the maximum {column.max:g}")
