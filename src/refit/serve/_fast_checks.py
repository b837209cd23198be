"""Checks of a whole request at once, for the common case where everything in it is valid.

`refit.serve.records` checks a request with these first: each returns the checked values, or
None when anything needs a closer look, and the per-value checks then name every problem. They
accept what the per-value checks accept, or less (tests/serve/test_records.py compares the two
on the same bodies).
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Callable
from typing import Any

import numpy as np

from refit.signature import InputColumn
from refit.spec import FeatureType
from refit.values import MISSING_CATEGORY

Fast = Callable[[list[Any]], list[Any] | None]
_NONE = type(None)


def fast_checker(column: InputColumn) -> Fast:
    """A check of a whole column at once, for the common case where every value is valid:
    the checked values, or None when any value needs a closer look (the per-value checks then
    name the problem). It accepts exactly what the per-value check accepts, or less."""
    nullable = {_NONE} if column.nullable else set()
    low, high = column.min, column.max
    bounded = low is not None or high is not None

    def in_range(array: np.ndarray[Any, Any]) -> bool:  # NaN (a missing value) compares False
        return not (low is not None and (array < low).any()) and not (
            high is not None and (array > high).any()
        )

    if column.type is FeatureType.FLOAT:
        allowed = {float, int, *nullable}

        def floats(values: list[Any]) -> list[Any] | None:
            types = set(map(type, values))
            if not types <= allowed:
                return None
            nones = values.count(None) if _NONE in types else 0
            try:
                array = np.array(values, dtype=np.float64)  # None becomes NaN
            except (OverflowError, TypeError, ValueError):
                return None
            if np.isinf(array).any() or int(np.isnan(array).sum()) != nones:
                return None  # a NaN or an infinity the fallback JSON parser let through
            if not in_range(array):
                return None
            if int in types and bounded and not _exact(array):
                return None  # an integer past 2**53, rounded, compared with a bound
            if int in types:
                return [None if v is None else float(v) for v in values]
            return values

        return floats
    if column.type is FeatureType.INT:

        def ints(values: list[Any]) -> list[Any] | None:
            if set(map(type, values)) != {int}:
                return None  # floats such as 2.0 and missing values take the closer look
            try:
                array = np.array(values, dtype=np.int64)
            except OverflowError:
                return None
            if bounded and np.abs(array).max() > 2**53:
                return None  # compared with a float bound, it would be rounded first
            return values if in_range(array) else None

        return ints
    if column.type is FeatureType.BOOL:
        bools = {bool, *nullable}
        return lambda values: values if set(map(type, values)) <= bools else None
    strings = {str, *nullable}
    categories = set(column.values) if column.values is not None else None

    def texts(values: list[Any]) -> list[Any] | None:
        if not set(map(type, values)) <= strings:
            return None
        given = set(values) - {None}
        if categories is not None and not given <= categories:
            return None
        if MISSING_CATEGORY in given or not all(map(str.strip, given)):
            return None  # the marker, or blank text (a missing value): the closer look
        return values

    return texts


class FloatRows:
    """The fastest check, for a signature of float columns only (most tabular models): all
    rows as one matrix, in one pass at C speed."""

    @staticmethod
    def fits(columns: list[InputColumn]) -> bool:
        return len(columns) > 1 and all(c.type is FeatureType.FLOAT for c in columns)

    def __init__(self, columns: list[InputColumn]) -> None:
        self.getter = operator.itemgetter(*(c.name for c in columns))
        self.low = np.array([-np.inf if c.min is None else c.min for c in columns])
        self.high = np.array([np.inf if c.max is None else c.max for c in columns])
        self.bounded = any(c.min is not None or c.max is not None for c in columns)

    def check(self, rows: list[tuple[Any, ...]]) -> np.ndarray[Any, Any] | None:
        """The [rows, columns] float matrix when every value is a finite number in range;
        None otherwise (a missing value included: the column checks handle those)."""
        types = set(map(type, itertools.chain.from_iterable(rows)))
        if not types <= {float, int}:
            return None
        try:
            matrix = np.array(rows, dtype=np.float64)
        except (OverflowError, TypeError, ValueError):
            return None
        if not np.isfinite(matrix).all():
            return None
        if self.bounded:
            if (matrix < self.low).any() or (matrix > self.high).any():
                return None
            if int in types and not _exact(matrix):
                return None  # an integer past 2**53, rounded, compared with a bound
        return matrix


def _exact(array: np.ndarray[Any, Any]) -> bool:
    """Whether no value of a float `array` is 2**53 or more in magnitude: below, an integer
    converted to a float is exact, so compares with a bound as the per-value check compares
    it (NaN, a missing value, compares False)."""
    return not (np.abs(array) >= 2**53).any()


FAST_ROWS = 8
"""From this many rows on, a request's columns are checked whole (`fast_checker`) before
value by value: for a single row, the per-value checks are quicker."""
FAST_MATRIX_ROWS = 1
"""From this many rows on, a request of float features only is checked as one matrix
(`FloatRows`) before value by value: for one record of 30 floats ~5 µs instead of ~14 µs."""
