"""Request bodies: JSON parsed strictly enough, and records checked against a signature into
the typed frame a model takes, with every problem named."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from refit import predictions
from refit.errors import InputError, MalformedBodyError, Problem, TooLargeError
from refit.serve import records
from refit.serve._json import parse_json
from refit.serve.records import MAX_PROBLEMS, ExtraFields, RecordReader
from refit.signature import InputColumn, Output, Signature
from refit.spec import FeatureType, Task

SIGNATURE = Signature(
    inputs=[
        InputColumn("amount", FeatureType.FLOAT, nullable=False, min=0, max=100),
        InputColumn("seats", FeatureType.INT, nullable=True, min=1),
        InputColumn("active", FeatureType.BOOL, nullable=False),
        InputColumn("plan", FeatureType.CATEGORY, nullable=True, values=["1", "basic", "pro"]),
        InputColumn("country", FeatureType.CATEGORY, nullable=False),
    ],
    output=Output(Task.CLASSIFICATION, "string", ["no", "yes"], probabilities=True),
)
VALID = {"amount": 12.5, "seats": 3, "active": True, "plan": "pro", "country": "fr"}


@pytest.fixture
def reader() -> RecordReader:
    return RecordReader(SIGNATURE, max_rows=10)


def refused(reader: RecordReader, **changes: Any) -> list[Problem]:
    """The problems of a single record: VALID with `changes`."""
    with pytest.raises(InputError) as raised:
        reader.one({**VALID, **changes})
    return raised.value.problems


def accepted(reader: RecordReader, **changes: Any) -> dict[str, Any]:
    """The row the model gets for VALID with `changes`."""
    row = reader.one({**VALID, **changes}).iloc[0].to_dict()
    return {str(name): value for name, value in row.items()}


def test_a_valid_record_becomes_one_typed_row_in_signature_order(reader: RecordReader) -> None:
    frame = reader.one(dict(reversed(VALID.items())))
    assert list(frame.columns) == SIGNATURE.names
    assert frame.dtypes.astype(str).tolist() == ["float64", "Int64", "boolean", "object", "object"]
    assert frame.iloc[0].tolist() == [12.5, 3, True, "pro", "fr"]


def test_a_batch_keeps_record_order(reader: RecordReader) -> None:
    body = {"records": [{**VALID, "amount": float(n)} for n in (5, 1, 9, 3)]}
    assert reader.many(body)["amount"].tolist() == [5.0, 1.0, 9.0, 3.0]


def test_an_int_takes_whole_numbers_written_as_floats_but_not_fractions(
    reader: RecordReader,
) -> None:
    assert accepted(reader, seats=2.0)["seats"] == 2
    assert refused(reader, seats=2.5) == [
        Problem("seats", "not an integer", 2.5, "an integer in [1, inf] or null")
    ]
    assert accepted(reader, seats="2")["seats"] == 2, "text is read as a CSV cell is"
    assert refused(reader, seats="two") == [
        Problem("seats", "wrong type", "two", "an integer in [1, inf] or null")
    ]


def test_an_int_must_fit_in_64_bits(reader: RecordReader) -> None:
    assert accepted(reader, seats=2**63 - 1)["seats"] == 2**63 - 1
    for value in (2**63, 1e20):
        [problem] = refused(reader, seats=value)
        assert (problem.problem, problem.received) == ("outside the 64-bit integer range", value)


def test_a_bool_takes_true_false_yes_no_and_1_0_as_ingest_does(reader: RecordReader) -> None:
    assert accepted(reader, active=False)["active"] is False
    for value, meant in ((1, True), (0, False), ("true", True), (1.0, True), (" No ", False)):
        assert accepted(reader, active=value)["active"] is meant
    for value in (2, "maybe", 0.5):
        assert refused(reader, active=value) == [
            Problem("active", "wrong type", value, "true or false")
        ]


def test_a_number_is_not_a_bool_and_keeps_to_its_range(reader: RecordReader) -> None:
    assert accepted(reader, amount=7)["amount"] == 7.0
    assert accepted(reader, amount=0)["amount"] == 0.0
    assert accepted(reader, amount=100)["amount"] == 100.0
    expected = "a number in [0, 100]"
    assert refused(reader, amount=True) == [Problem("amount", "wrong type", True, expected)]
    assert accepted(reader, amount="7")["amount"] == 7.0, "text is read as a CSV cell is"
    assert refused(reader, amount="7 kg") == [Problem("amount", "wrong type", "7 kg", expected)]
    assert refused(reader, amount=-0.5) == [
        Problem("amount", "below the minimum 0", -0.5, expected)
    ]
    assert refused(reader, amount=100.5) == [
        Problem("amount", "above the maximum 100", 100.5, expected)
    ]
    assert refused(reader, seats=0)[0].problem == "below the minimum 1"


@pytest.mark.parametrize(
    ("value", "received", "problem"),
    [
        (math.nan, "NaN", "not a finite number"),
        (math.inf, "Infinity", "not a finite number"),
        (-math.inf, "-Infinity", "not a finite number"),
        (10**400, 10**400, "too large for a 64-bit float"),
    ],
)
def test_non_finite_numbers_are_refused_everywhere(
    reader: RecordReader, value: Any, received: Any, problem: str
) -> None:
    for field in ("amount", "seats"):
        [found] = refused(reader, **{field: value})
        if field == "seats" and isinstance(value, int):
            problem = "outside the 64-bit integer range"
        assert (found.field, found.problem, found.received) == (field, problem, received)
    [found] = refused(reader, country=math.nan)
    assert (found.problem, found.received) == ("not a finite number", "NaN")


def test_a_category_takes_numbers_as_their_text(reader: RecordReader) -> None:
    assert accepted(reader, country=3)["country"] == "3"
    assert accepted(reader, country=2.0)["country"] == "2"
    assert accepted(reader, country=2.5)["country"] == "2.5"
    assert accepted(reader, plan=1)["plan"] == "1", "1 is one of the declared categories"
    assert refused(reader, country=True) == [Problem("country", "wrong type", True, "a string")]
    assert refused(reader, country=["fr"]) == [
        Problem("country", "wrong type", "a list", "a string")
    ]


def test_a_category_with_declared_values_takes_only_those(reader: RecordReader) -> None:
    assert refused(reader, plan="gold") == [
        Problem(
            "plan",
            "not one of the allowed categories",
            "gold",
            "a string, one of 1, basic, pro or null",
        )
    ]


def test_null_is_missing_data_where_nullable_and_a_problem_elsewhere(
    reader: RecordReader,
) -> None:
    frame = reader.one({**VALID, "seats": None, "plan": None})
    assert frame["seats"].isna().all() and frame["seats"].dtype == "Int64"
    assert frame["plan"].isna().all()
    assert refused(reader, amount=None, active=None) == [
        Problem("amount", "null", None, "a number in [0, 100]"),
        Problem("active", "null", None, "true or false"),
    ]


def test_missing_and_unknown_fields_are_named(reader: RecordReader) -> None:
    record = {k: v for k, v in VALID.items() if k != "seats"}
    with pytest.raises(InputError) as raised:
        reader.one({**record, "seat": 2, "colour": "red"})
    assert raised.value.problems == [
        Problem("colour", "unknown field", "red", "no such field"),
        Problem("seat", "unknown field", 2, "no such field (did you mean seats?)"),
        Problem("seats", "missing", None, "an integer in [1, inf] or null"),
    ]
    assert raised.value.message == "3 problems with the input; first: colour: unknown field"


def test_a_batch_names_each_record_and_stops_at_the_problem_cap(reader: RecordReader) -> None:
    body = {"records": [{**VALID, "amount": "x"} for _ in range(MAX_PROBLEMS * 2)]}
    with pytest.raises(InputError) as raised:
        RecordReader(SIGNATURE, max_rows=1000).many(body)
    problems = raised.value.problems
    assert len(problems) == MAX_PROBLEMS
    assert [p.field for p in problems] == [f"records[{i}].amount" for i in range(MAX_PROBLEMS)]


def test_the_problem_cap_holds_within_one_record() -> None:
    wide = Signature(
        [InputColumn(f"x{i}", FeatureType.FLOAT) for i in range(MAX_PROBLEMS + 10)],
        Output(Task.REGRESSION, "float"),
    )
    with pytest.raises(InputError) as raised:
        RecordReader(wide, max_rows=1).one({})
    assert len(raised.value.problems) == MAX_PROBLEMS


def test_unknown_fields_cost_a_did_you_mean_only_up_to_the_problem_cap(
    reader: RecordReader, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A record (or table) of 10^5 unknown fields is named by its first MAX_PROBLEMS names,
    # in order; the look-up of a resembling name runs for those alone, not per field.
    looked_up: list[str] = []
    resembling = RecordReader._no

    def counted(self: RecordReader, name: str) -> str:
        looked_up.append(name)
        return resembling(self, name)

    monkeypatch.setattr(RecordReader, "_no", counted)
    unknown = {f"unknown_{i:06}": 1 for i in range(100_000)}
    for call in (
        lambda: reader.one({**VALID, **unknown}),
        lambda: reader.table_columns({**unknown}, lambda name, i: f"{name}[{i}]"),
    ):
        looked_up.clear()
        with pytest.raises(InputError) as raised:
            call()
        fields = [p.field for p in raised.value.problems if p.problem == "unknown field"]
        assert fields[:3] == ["unknown_000000", "unknown_000001", "unknown_000002"]
        assert len(looked_up) <= MAX_PROBLEMS


def test_names_given_twice_are_found_in_one_pass_and_capped() -> None:
    names = [f"n{i % 30_000:05}" for i in range(60_000)]  # every name twice
    assert records.given_twice(names) == [f"n{i:05}" for i in range(MAX_PROBLEMS)]
    assert records.given_twice(["a", "b", "a"]) == ["a"]
    assert records.given_twice(["a", "b"]) == []


def test_a_batch_over_the_row_limit_is_refused_before_it_is_read() -> None:
    reader = RecordReader(SIGNATURE, max_rows=2)
    assert len(reader.many({"records": [VALID, VALID]})) == 2
    with pytest.raises(TooLargeError, match=r"3 records; .* at most 2 per request"):
        reader.many({"records": [VALID, VALID, "not even a record"]})


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"records": []}, Problem("records", "empty batch", [], "at least one record")),
        ({"records": None}, Problem("records", "wrong type", None, "a list")),
        ({"records": [VALID], "n": 1}, Problem("n", "unknown field", 1, 'only "records"')),
    ],
)
def test_a_batch_of_the_wrong_shape_is_an_input_problem(
    reader: RecordReader, body: dict[str, Any], problem: Problem
) -> None:
    with pytest.raises(InputError) as raised:
        reader.many(body)
    assert raised.value.problems == [problem]


@pytest.mark.parametrize("body", [[VALID], {"rows": [VALID]}, None, "records"])
def test_a_batch_body_must_be_an_object_with_records(reader: RecordReader, body: Any) -> None:
    with pytest.raises(MalformedBodyError, match="records"):
        reader.many(body)


def test_parse_json_reads_the_non_finite_literals_python_lets_through() -> None:
    parsed = parse_json(b'{"a": NaN, "b": Infinity, "c": -Infinity, "d": 1e999, "e": -1e999}')
    assert math.isnan(parsed["a"])
    assert [parsed[k] for k in "bcde"] == [math.inf, -math.inf, math.inf, -math.inf]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "the request body is empty; expected a JSON object"),
        (b" \r\n\t", "the request body is empty; expected a JSON object"),
        (b'{\n  "a": }', "the request body is not valid JSON: Expecting value at line 2, column 8"),
        (
            b'{"a": 1} {"b": 2}',
            "the request body is not valid JSON: Extra data at line 1, column 10",
        ),
        (b'{"a": nan}', "the request body is not valid JSON: Expecting value at line 1, column 7"),
        (b'{"a": "caf\xe9"}', "the request body is not UTF-8 text"),
        (b"[" * 100_000 + b"]" * 100_000, "the request body nests arrays or objects too deeply"),
        (b"1" * 5000, "the request body holds an integer of more than 4300 digits"),
    ],
)
def test_parse_json_says_what_is_wrong_with_a_body(body: bytes, message: str) -> None:
    with pytest.raises(MalformedBodyError) as raised:
        parse_json(body)
    assert raised.value.message == message


def test_an_all_float_frame_is_built_as_one_block_with_the_same_values() -> None:
    from refit.predictions import frame_of
    from refit.signature import InputColumn
    from refit.spec import FeatureType

    inputs = [InputColumn(name, FeatureType.FLOAT) for name in ("a", "b", "c")]
    frame = frame_of(inputs, [[1.5, None], [2.0, 3.0], [None, -1.0]])
    assert list(frame.columns) == ["a", "b", "c"]
    assert list(frame.dtypes) == ["float64"] * 3
    assert frame.isna().to_numpy().tolist() == [[False, False, True], [True, False, False]]
    assert frame.loc[1, "c"] == -1.0 and frame.loc[0, "a"] == 1.5


# --- whole-column checks: the same verdicts as value by value, only sooner -------------------

FLOATS = Signature(
    inputs=[
        InputColumn("a", FeatureType.FLOAT, nullable=False, min=0, max=100),
        InputColumn("b", FeatureType.FLOAT, nullable=True),
    ],
    output=Output(Task.REGRESSION, "float"),
)
FLOAT_ROW = {"a": 1.5, "b": -2.0}

# One change to the 5th of 12 valid rows; each is either still valid or a problem to name.
CHANGES: list[tuple[str, Any]] = [
    ("amount", 7),  # an int for a float
    ("amount", 100.0),  # the maximum itself
    ("amount", 100.5),
    ("amount", -0.0),
    ("amount", True),
    ("amount", "12"),
    ("amount", None),
    ("amount", math.nan),
    ("amount", math.inf),
    ("amount", 10**400),
    ("amount", [1.0]),
    ("seats", None),
    ("seats", 2.0),
    ("seats", 2.5),
    ("seats", 0),
    ("seats", 2**63),
    ("seats", 2**53 + 1),
    ("seats", False),
    ("active", 1),
    ("active", None),
    ("plan", None),
    ("plan", 1),
    ("plan", "gold"),
    ("country", 33),
    ("country", None),
    ("extra", 1),
]


def slow_reader(
    signature: Signature, monkeypatch: pytest.MonkeyPatch, extra_fields: ExtraFields = "reject"
) -> RecordReader:
    """A reader that checks every value on its own (the fast paths never apply)."""
    monkeypatch.setattr(records, "FAST_ROWS", 10**9)
    monkeypatch.setattr(records, "FAST_MATRIX_ROWS", 10**9)
    return RecordReader(signature, max_rows=100, extra_fields=extra_fields)


def verdict(read: Any, *args: Any) -> Any:
    try:
        return ("ok", read(*args))
    except InputError as exc:
        return ("refused", exc.problems)


def short(value: Any) -> str:
    return repr(value)[:12]


@pytest.mark.parametrize(("field", "value"), CHANGES, ids=[f"{f}={short(v)}" for f, v in CHANGES])
def test_batches_get_the_same_verdict_checked_by_column_or_by_value(
    monkeypatch: pytest.MonkeyPatch, field: str, value: Any
) -> None:
    rows = [dict(VALID) for _ in range(12)]
    rows[4][field] = value
    body = {"records": rows}
    fast = verdict(RecordReader(SIGNATURE, max_rows=100).many_columns, body)
    table = {name: [row.get(name) for row in rows] for name in SIGNATURE.names}
    fast_table = verdict(RecordReader(SIGNATURE, max_rows=100).table_columns, table, FIELD)
    slow = slow_reader(SIGNATURE, monkeypatch)
    assert fast == verdict(slow.many_columns, body)
    assert fast_table == verdict(slow.table_columns, table, FIELD)


def FIELD(name: str, i: int) -> str:
    return f"{name}[{i}]"


@pytest.mark.parametrize(
    "value", [7, 100.0, 100.5, -1.0, True, "1.5", None, math.nan, -math.inf, 10**400, {}], ids=short
)
@pytest.mark.parametrize("field", ["a", "b"])
def test_float_rows_get_the_same_verdict_checked_as_a_matrix_or_by_value(
    monkeypatch: pytest.MonkeyPatch, field: str, value: Any
) -> None:
    rows = [dict(FLOAT_ROW) for _ in range(10)]
    rows[7][field] = value
    body = {"records": rows}
    fast = verdict(RecordReader(FLOATS, max_rows=100).many_columns, body)
    assert fast == verdict(slow_reader(FLOATS, monkeypatch).many_columns, body)


def test_checked_float_columns_are_floats_in_record_order() -> None:
    rows = [{"a": float(i), "b": i} for i in range(10)]
    rows[3]["b"] = None
    columns = RecordReader(FLOATS, max_rows=100).many_columns({"records": rows})
    assert columns[0] == [float(i) for i in range(10)]
    assert columns[1] == [None if i == 3 else float(i) for i in range(10)]
    assert all(type(v) is float for v in columns[0] + columns[1] if v is not None)
    del rows[9]["b"]
    with pytest.raises(InputError, match=r"records\[9\]\.b: missing"):
        RecordReader(FLOATS, max_rows=100).many_columns({"records": rows})


@pytest.mark.parametrize(("signature", "row"), [(SIGNATURE, VALID), (FLOATS, FLOAT_ROW)])
def test_a_valid_batch_never_reaches_the_per_value_checks(signature: Signature, row: Any) -> None:
    def per_value(value: Any) -> Any:
        raise AssertionError("checked value by value")

    reader = RecordReader(signature, max_rows=100)
    reader._checks = [per_value] * len(signature.inputs)
    columns = reader.many_columns({"records": [row] * 12})
    assert [column[0] for column in columns] == list(row.values())
    table = {name: [row[name]] * 12 for name in signature.names}
    assert reader.table_columns(table, FIELD) == columns


def test_a_huge_integer_is_compared_with_its_bound_exactly(monkeypatch: pytest.MonkeyPatch) -> None:
    counts = Signature(
        inputs=[InputColumn("n", FeatureType.INT, nullable=False, max=float(2**53))],
        output=Output(Task.REGRESSION, "float"),
    )
    body = {"records": [{"n": 1}] * 9 + [{"n": 2**53 + 1}]}  # as a float, it equals the bound
    fast = verdict(RecordReader(counts, max_rows=100).many_columns, body)
    assert fast[0] == "refused"
    assert fast == verdict(slow_reader(counts, monkeypatch).many_columns, body)


FLOAT_VALUES = [7, 100.0, 100.5, -1.0, -0.0, True, "1.5", None, math.nan, -math.inf, 10**400, {}]


@pytest.mark.parametrize("value", FLOAT_VALUES, ids=short)
@pytest.mark.parametrize("field", ["a", "b", "c"])
@pytest.mark.parametrize("extra_fields", ["reject", "ignore"])
def test_single_float_records_get_the_same_verdict_checked_as_a_matrix_or_by_value(
    monkeypatch: pytest.MonkeyPatch, field: str, value: Any, extra_fields: ExtraFields
) -> None:
    record = {**FLOAT_ROW, field: value}  # "c" is no feature: an unknown field
    reader = RecordReader(FLOATS, max_rows=100, extra_fields=extra_fields)
    fast = verdict(reader.one_columns, record)
    slow = slow_reader(FLOATS, monkeypatch, extra_fields)
    assert fast == verdict(slow.one_columns, record)
    few = {"records": [FLOAT_ROW, record, FLOAT_ROW]}  # fewer than FAST_ROWS records
    assert verdict(reader.many_columns, few) == verdict(slow.many_columns, few)


@pytest.mark.parametrize(("field", "value"), CHANGES, ids=[f"{f}={short(v)}" for f, v in CHANGES])
def test_single_records_of_every_type_get_the_same_verdict_as_before(
    monkeypatch: pytest.MonkeyPatch, field: str, value: Any
) -> None:
    record = {**VALID, field: value}
    fast = verdict(RecordReader(SIGNATURE, max_rows=100).one_columns, record)
    assert fast == verdict(slow_reader(SIGNATURE, monkeypatch).one_columns, record)


@pytest.mark.parametrize("rows", [1, 3])
def test_a_valid_float_record_never_reaches_the_per_value_checks(rows: int) -> None:
    def per_value(value: Any) -> Any:
        raise AssertionError("checked value by value")

    reader = RecordReader(FLOATS, max_rows=100)
    reader._checks = [per_value] * len(FLOATS.inputs)
    record = {"a": 3, "b": -2.5}
    assert reader.one_columns(record) == [[3.0], [-2.5]]
    assert reader.many_columns({"records": [record] * rows}) == [[3.0] * rows, [-2.5] * rows]


@pytest.mark.parametrize("rows", [1, 10])
def test_a_huge_integer_for_a_float_is_compared_with_its_bound_exactly(
    monkeypatch: pytest.MonkeyPatch, rows: int
) -> None:
    bounded = Signature(
        inputs=[
            InputColumn("x", FeatureType.FLOAT, nullable=False, max=float(2**53)),
            InputColumn("y", FeatureType.FLOAT, nullable=True),
        ],
        output=Output(Task.REGRESSION, "float"),
    )
    # As a float, 2**53 + 1 equals the bound; as the integer it is, it lies above it.
    body = {"records": [{"x": 1.0, "y": 0.0}] * (rows - 1) + [{"x": 2**53 + 1, "y": 0.0}]}
    fast = verdict(RecordReader(bounded, max_rows=100).many_columns, body)
    assert fast[0] == "refused"
    assert fast == verdict(slow_reader(bounded, monkeypatch).many_columns, body)
    body["records"][0] = {"x": 2**53 + 1, "y": None}  # the column checks, a missing value beside
    fast = verdict(RecordReader(bounded, max_rows=100).many_columns, body)
    assert fast[0] == "refused"
    assert fast == verdict(slow_reader(bounded, monkeypatch).many_columns, body)


def test_float_columns_checked_as_a_matrix_keep_it_for_the_model() -> None:
    reader = RecordReader(FLOATS, max_rows=100)
    rows = [{"a": float(i), "b": -i} for i in range(5)]
    columns = reader.many_columns({"records": rows})
    assert isinstance(columns, predictions.MatrixColumns)
    assert columns == [[float(i) for i in range(5)], [float(-i) for i in range(5)]]
    matrix = columns.matrix
    assert matrix.dtype == np.float64 and matrix.flags.c_contiguous
    assert matrix.tolist() == [[float(i), float(-i)] for i in range(5)]
    with pytest.raises(ValueError, match="read-only"):
        matrix[0, 0] = 1.0
    frame = reader.frame(columns)
    frame.iloc[0, 0] = 99.0  # the frame is the model's own: the matrix stays as checked
    assert matrix[0, 0] == 0.0
    assert frame.iloc[1:].equals(reader.frame([list(c) for c in columns]).iloc[1:])
    with_gap = reader.one_columns({"a": 1.0, "b": None})  # a missing value: no matrix
    assert with_gap == [[1.0], [None]] and not isinstance(with_gap, predictions.MatrixColumns)


def test_joined_columns_keep_the_rows_in_order_and_the_matrix_when_every_part_has_one() -> None:
    reader = RecordReader(FLOATS, max_rows=100)
    first = reader.many_columns({"records": [{"a": 1.0, "b": 2.0}, {"a": 3.0, "b": 4.0}]})
    second = reader.one_columns({"a": 5.0, "b": 6.0})
    gap = reader.one_columns({"a": 7.0, "b": None})
    both = predictions.joined([first, second])
    assert both == [[1.0, 3.0, 5.0], [2.0, 4.0, 6.0]]
    assert isinstance(both, predictions.MatrixColumns)
    assert both.matrix.tolist() == [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]
    mixed = predictions.joined([first, gap])
    assert mixed == [[1.0, 3.0, 7.0], [2.0, 4.0, None]]
    assert not isinstance(mixed, predictions.MatrixColumns)
    assert predictions.joined([gap]) is gap
