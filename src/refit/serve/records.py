"""Request bodies: JSON in, checked against a model's signature, out as a typed DataFrame.

Everything wrong with a body is reported at once, one `Problem` per field: missing and
unknown fields, wrong types, NaN and infinities (which JSON cannot carry but Python's parser
lets through as `NaN`/`Infinity`), values outside the declared range or categories. What a
value means is `refit.values`' rule, the one ingest applies.
"""

from __future__ import annotations

import collections
import difflib
import heapq
import itertools
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

import pandas as pd

from refit.errors import InputError, MalformedBodyError, Problem, TooLargeError
from refit.predictions import Columns, MatrixColumns, frame_of
from refit.serve._fast_checks import FAST_MATRIX_ROWS, FAST_ROWS, FloatRows, fast_checker
from refit.signature import InputColumn, Signature
from refit.spec import FeatureType
from refit.values import coercer, is_missing

_EXPECTED = {
    FeatureType.FLOAT: "a number",
    FeatureType.INT: "an integer",
    FeatureType.BOOL: "true or false",
    FeatureType.CATEGORY: "a string",
}
MAX_PROBLEMS = 50
MAX_EXTRA_FIELDS = 1024
"""With `serve.extra_fields: ignore`, how many fields beyond the model's a record (or a table)
may carry; one with more is refused before any value is read."""
ExtraFields = Literal["reject", "ignore"]


def explain(error: InputError, limit: int = 10) -> str:
    """One line naming the problems of `error`, for protocols whose errors are a message:
    `2 problems with the input: amount[0]: wrong type, received "x", expected a number; ...`.
    """
    parts = []
    for p in error.problems[:limit]:
        shown = p.received is not None or p.problem == "null"
        details = [f"received {json.dumps(p.received)}"] if shown else []
        if p.expected is not None:
            details.append(f"expected {p.expected}")
        parts.append(", ".join([f"{p.field}: {p.problem}", *details]))
    count = len(error.problems)
    more = f"; and {count - limit} more" if count > limit else ""
    return f"{count} problem{'s' if count > 1 else ''} with the input: {'; '.join(parts)}{more}"


_SHOWN = 200
"""Characters of a client's text (a value, a field's name) that a problem repeats."""


def clipped(text: str) -> str:
    """`text` as a problem names it: cut to `_SHOWN` characters (an answer stays small)."""
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


def received(value: Any) -> Any:
    """A client's value as a problem shows it: text clipped, NaN and infinities named, a
    container by its kind."""
    if isinstance(value, str):
        return clipped(value)
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, (dict, list)):
        return "an object" if isinstance(value, dict) else "a list"
    return value


def _expected(column: InputColumn) -> str:
    text = _EXPECTED[column.type]
    if column.values is not None:
        text += f", one of {', '.join(column.values)}"
    if column.min is not None or column.max is not None:
        low = "-inf" if column.min is None else f"{column.min:g}"
        high = "inf" if column.max is None else f"{column.max:g}"
        text += f" in [{low}, {high}]"
    return text + (" or null" if column.nullable else "")


def given_twice(names: Iterable[str]) -> list[str]:
    """The names given more than once, sorted, at most `MAX_PROBLEMS` of them: one pass over
    the names (a CSV header of 10^5 names costs milliseconds, not a count per name)."""
    counts = collections.Counter(names)
    return heapq.nsmallest(MAX_PROBLEMS, (name for name, n in counts.items() if n > 1))


class RecordReader:
    """Turns JSON records into the DataFrame a model of `signature` takes. Built once per
    loaded model, so the per-request work is only the checks themselves."""

    def __init__(
        self, signature: Signature, max_rows: int, extra_fields: ExtraFields = "reject"
    ) -> None:
        self.signature = signature
        self.max_rows = max_rows
        self.ignores_extra = extra_fields == "ignore"
        """Whether fields that are no input of the model are dropped (else refused)."""
        self.columns = signature.inputs
        self.names = signature.names
        self._known = set(self.names)
        self._checks = [coercer(c) for c in self.columns]
        self._fast = [fast_checker(c) for c in self.columns]
        self._floats = FloatRows(self.columns) if FloatRows.fits(self.columns) else None
        self._expected = [_expected(c) for c in self.columns]
        self.max_fields = len(self.names) + (MAX_EXTRA_FIELDS if self.ignores_extra else 0)
        self._too_many = f"at most {self.max_fields} fields" + (
            f": the model's {len(self.names)} and up to {MAX_EXTRA_FIELDS} others"
            if self.ignores_extra
            else ", the model's inputs"
        )
        # A name more than twice as long as every input's resembles none of them (a ratio of
        # 0.75 needs lengths within 5:3): no did-you-mean, whose cost grows with its length.
        self._resembles = 2 * max(map(len, self.names), default=0)
        width = len(self.names) + (len(self.names) + 8 if self.ignores_extra else 1)
        self.max_separators = (max_rows + 1) * width + 1024
        """The most commas (outside strings) a body of a batch, a table or tensors may hold:
        `max_rows` rows of the model's fields and a margin. One with more is refused before it
        is parsed."""
        self.max_record_separators = self.max_fields + MAX_EXTRA_FIELDS
        """The same for a body of one record: room to name a few hundred unknown fields."""

    def check_names(self, names: Sequence[str], where: str) -> None:
        """Refuse a table of more names than the model's (of more than `max_fields` when extra
        fields are ignored) before any of its values is read: its first unknown names, or the
        names it gives twice. The per-value work on so wide a table could never succeed."""
        if len(names) <= (self.max_fields if self.ignores_extra else len(self.names)):
            return
        if self.ignores_extra:
            raise InputError([Problem(where, "too many fields", len(names), self._too_many)])
        unknown = itertools.islice((n for n in names if n not in self._known), MAX_PROBLEMS)
        problems = [Problem(clipped(n), "unknown field", None, self._no(n)) for n in unknown]
        if not problems:  # only the model's names, some of them more than once
            problems = [Problem(where, "names given twice", given_twice(names), None)]
        raise InputError(problems)

    def _no(self, name: str) -> str:
        """What is expected instead of an unknown field: nothing, or the name it resembles."""
        if len(name) > self._resembles:
            return "no such field"
        close = difflib.get_close_matches(name, self.names, n=1, cutoff=0.75)
        return f"no such field (did you mean {close[0]}?)" if close else "no such field"

    def one(self, record: Any) -> pd.DataFrame:
        return self.frame(self.one_columns(record))

    def many(self, body: Any) -> pd.DataFrame:
        return self.frame(self.many_columns(body))

    def one_columns(self, record: Any) -> Columns:
        """The checked values of one record, column by column (see `Columns`)."""
        return self._columns([record], lambda i, name: name, "the body")

    def many_columns(self, body: Any) -> Columns:
        """The checked values of `{"records": [...]}`, column by column."""
        if not isinstance(body, dict) or "records" not in body:
            raise MalformedBodyError('expected a JSON object {"records": [{...}, ...]}')
        if len(body) > 1:
            others = heapq.nsmallest(MAX_PROBLEMS, body.keys() - {"records"})
            raise InputError(
                [
                    Problem(clipped(k), "unknown field", received(body[k]), 'only "records"')
                    for k in others
                ]
            )
        records = body["records"]
        if not isinstance(records, list):
            raise InputError([Problem("records", "wrong type", received(records), "a list")])
        if not records:
            raise InputError([Problem("records", "empty batch", [], "at least one record")])
        if len(records) > self.max_rows:
            raise TooLargeError(
                f"the batch has {len(records)} records; this server takes at most "
                f"{self.max_rows} per request (serve.max_batch_rows)"
            )
        return self._columns(records, lambda i, name: f"records[{i}].{name}", "records[{i}]")

    def frame(self, columns: Columns) -> pd.DataFrame:
        """The typed DataFrame of checked columns, as the model was trained on."""
        return frame_of(self.columns, columns)

    def batch_columns(self, records: Any, where: str) -> Columns:
        """The checked values of `records` (objects of fields) that came as `where` in a body,
        e.g. `reader.batch_columns(body["instances"], "instances")`: problems are named like
        `instances[3].plan`, and an empty batch or one over the row limit is refused."""
        if not isinstance(records, list):
            raise InputError([Problem(where, "wrong type", received(records), "a list")])
        if not records:
            raise InputError([Problem(where, "empty batch", [], "at least one record")])
        self.check_rows(len(records), "records")
        return self._columns(records, lambda i, name: f"{where}[{i}].{name}", where + "[{i}]")

    def table_columns(
        self, table: Mapping[str, Sequence[Any]], field: Callable[[str, int], str]
    ) -> Columns:
        """The checked values of a table given by column, `{"amount": [1.5, 2.0], ...}`: the
        columnar layouts of the standard protocols (V2 tensors, MLflow's, CSV).

        Names are checked once (unknown ones with the name they resemble, missing ones), then
        every value as a record's are; `field(name, i)` names value `i` of column `name` in
        the problems, e.g. `lambda name, i: f"{name}[{i}]"`.
        """
        self.check_names(list(table), "the body")
        unknown = () if self.ignores_extra else (n for n in table if n not in self._known)
        problems = [  # the first few unknown names, each with the name it resembles
            Problem(clipped(name), "unknown field", None, self._no(name))
            for name in itertools.islice(unknown, MAX_PROBLEMS)
        ]
        problems += [
            Problem(c.name, "missing", None, self._expected[j])
            for j, c in enumerate(self.columns)
            if c.name not in table
        ]
        sizes = {name: len(table[name]) for name in self.names if name in table}
        rows = max(sizes.values(), default=0)
        problems += [
            Problem(name, "wrong length", size, f"{rows} values, as many as the longest column")
            for name, size in sizes.items()
            if size != rows
        ]
        if problems:
            raise InputError(problems[:MAX_PROBLEMS])
        if rows == 0:
            raise InputError([Problem(self.names[0], "empty batch", [], "at least one value")])
        self.check_rows(rows, "rows")
        values: list[list[Any]] = []
        for j, column in enumerate(self.columns):
            given = table[column.name]
            if rows >= FAST_ROWS:
                fast = self._fast[j](given if isinstance(given, list) else list(given))
                if fast is not None:
                    values.append(fast)
                    continue
            check, checked = self._checks[j], []
            for i, raw in enumerate(given):
                blank = is_missing(raw)
                value, problem = (None, None) if blank else check(raw)
                if blank and not column.nullable:
                    problem = "null"
                if problem is not None:
                    problems.append(
                        Problem(field(column.name, i), problem, received(raw), self._expected[j])
                    )
                    if len(problems) >= MAX_PROBLEMS:
                        raise InputError(problems)
                checked.append(value)
            values.append(checked)
        if problems:
            raise InputError(problems)
        return values

    def check_rows(self, rows: int, unit: str) -> None:
        """Refuse a batch of more than `max_rows` rows (`TooLargeError`)."""
        if rows > self.max_rows:
            raise TooLargeError(
                f"the batch has {rows} {unit}; this server takes at most "
                f"{self.max_rows} per request (serve.max_batch_rows)"
            )

    def _columns(self, records: list[Any], field: Callable[[int, str], str], where: str) -> Columns:
        as_matrix = self._floats is not None and len(records) >= FAST_MATRIX_ROWS
        if as_matrix or len(records) >= FAST_ROWS:
            fast = self._fast_columns(records)
            if fast is not None:
                return fast
        problems: list[Problem] = []
        values: list[list[Any]] = [[] for _ in self.columns]
        for i, record in enumerate(records):
            if len(problems) >= MAX_PROBLEMS:
                break
            if not isinstance(record, dict):
                place = where.format(i=i)
                problems.append(
                    Problem(place, "wrong type", received(record), "an object of fields")
                )
                continue
            if self.ignores_extra and len(record) > self.max_fields:
                place = where.format(i=i)
                problems.append(Problem(place, "too many fields", len(record), self._too_many))
                continue
            if not self.ignores_extra and (unknown := record.keys() - self._known):
                # The first few in name order, each with the name it resembles: a record of
                # 10^5 unknown fields costs a sort, not 10^5 did-you-means.
                for name in heapq.nsmallest(MAX_PROBLEMS - len(problems), unknown):
                    shown = field(i, clipped(name))
                    problems.append(
                        Problem(shown, "unknown field", received(record[name]), self._no(name))
                    )
            wide = not self.ignores_extra and len(record) > len(self._known)
            for j, column in enumerate(self.columns):
                if column.name not in record:
                    problems.append(
                        Problem(field(i, column.name), "missing", None, self._expected[j])
                    )
                    continue
                if wide:
                    continue  # more fields than the model's: refused, its values are not read
                raw = record[column.name]
                if is_missing(raw):
                    if not column.nullable:
                        problems.append(
                            Problem(field(i, column.name), "null", None, self._expected[j])
                        )
                    values[j].append(None)
                    continue
                value, problem = self._checks[j](raw)
                if problem is not None:
                    problems.append(
                        Problem(field(i, column.name), problem, received(raw), self._expected[j])
                    )
                values[j].append(value)
        if problems:
            raise InputError(problems[:MAX_PROBLEMS])
        return values

    def _fast_columns(self, records: list[Any]) -> Columns | None:
        """The checked columns of records that are all objects with exactly the signature's
        fields and valid values, checked as one matrix (float features only) or, from
        `FAST_ROWS` records on, column by column; None when any is not (the per-value path
        then names every problem)."""
        # Objects of as many fields as the signature's, each of them found: exactly its fields
        # (or, when extra fields are ignored, at least its fields and at most max_fields).
        if set(map(type, records)) != {dict}:
            return None
        sizes = set(map(len, records))
        if self.ignores_extra:
            if min(sizes) < len(self._known) or max(sizes) > self.max_fields:
                return None
        elif sizes != {len(self._known)}:
            return None
        if self._floats is not None and len(records) >= FAST_MATRIX_ROWS:
            try:
                rows = list(map(self._floats.getter, records))
            except KeyError:
                return None
            matrix = self._floats.check(rows)
            if matrix is not None:
                return MatrixColumns(matrix)
        # Fewer rows than FAST_ROWS: the per-value checks are quicker than these.
        if len(records) < FAST_ROWS or any(not self._known <= r.keys() for r in records):
            return None
        columns: Columns = []
        for column, fast in zip(self.columns, self._fast, strict=True):
            name = column.name
            checked = fast([record[name] for record in records])
            if checked is None:
                return None
            columns.append(checked)
        return columns
