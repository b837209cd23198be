"""One table of values, run through every path a value takes: ingest (a CSV file, a column of
objects, a typed column), training's feature frame, and every serving codec (refit's records
one by one and as a batch checked whole, V2 inputs, /invocations JSON and CSV). Each path
must give the table's verdict: the same value, missing, or a refusal."""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from refit.data.sources import open_source
from refit.data.validation import validate
from refit.errors import InputError
from refit.serve._fast_checks import FAST_ROWS
from refit.serve.codecs.mlflow import csv_columns, json_columns
from refit.serve.codecs.v2_request import _TAKES, InferenceRequest, RequestInput, tensor_columns
from refit.serve.records import RecordReader
from refit.signature import InputColumn, Output, Signature
from refit.spec import CsvSource, DataSpec, FeatureType, Task
from refit.train.pipeline import feature_frame
from refit.values import MISSING_CATEGORY, category_text, parse_number

FLOAT, INT, BOOL, CATEGORY = (
    FeatureType.FLOAT,
    FeatureType.INT,
    FeatureType.BOOL,
    FeatureType.CATEGORY,
)


@dataclass(frozen=True)
class Refused:
    problem: str


MISSING = "missing"

CASES: list[tuple[FeatureType, Any, Any]] = [
    (FLOAT, 1.5, 1.5),
    (FLOAT, 3, 3.0),
    (FLOAT, "1.5", 1.5),
    (FLOAT, " -2 ", -2.0),
    (FLOAT, "1e3", 1000.0),
    (FLOAT, True, Refused("wrong type")),
    (FLOAT, "n/a", Refused("wrong type")),
    (FLOAT, "NaN", Refused("wrong type")),
    (FLOAT, "inf", Refused("wrong type")),
    (FLOAT, "1_000", Refused("wrong type")),
    (FLOAT, "", MISSING),
    (FLOAT, "  ", MISSING),
    (FLOAT, None, MISSING),
    (INT, 3, 3),
    (INT, 3.0, 3),
    (INT, "3", 3),
    (INT, "3.0", 3),
    (INT, "9223372036854775807", 2**63 - 1),
    (INT, 2.5, Refused("not an integer")),
    (INT, "2.5", Refused("not an integer")),
    (INT, 2**63, Refused("outside the 64-bit integer range")),
    (INT, 1e20, Refused("outside the 64-bit integer range")),
    (INT, True, Refused("wrong type")),
    (INT, "yes", Refused("wrong type")),
    (INT, None, MISSING),
    (BOOL, True, True),
    (BOOL, False, False),
    (BOOL, "yes", True),
    (BOOL, " No ", False),
    (BOOL, "TRUE", True),
    (BOOL, "false", False),
    (BOOL, 1, True),
    (BOOL, 0, False),
    (BOOL, 1.0, True),
    (BOOL, "1", True),
    (BOOL, "0.0", False),
    (BOOL, 2, Refused("wrong type")),
    (BOOL, "maybe", Refused("wrong type")),
    (BOOL, "n/a", Refused("wrong type")),
    (BOOL, "", MISSING),
    (CATEGORY, "pro", "pro"),
    (CATEGORY, " pro", " pro"),
    (CATEGORY, "007", "007"),
    (CATEGORY, "n/a", "n/a"),
    (CATEGORY, "NaN", "NaN"),
    (CATEGORY, 1, "1"),
    (CATEGORY, 2.0, "2"),
    (CATEGORY, 2.5, "2.5"),
    (CATEGORY, 1e20, "1e+20"),
    (CATEGORY, 10**20, "100000000000000000000"),
    (CATEGORY, True, Refused("wrong type")),
    (CATEGORY, MISSING_CATEGORY, Refused("reserved for a missing value (__missing__)")),
    (CATEGORY, "", MISSING),
    (CATEGORY, None, MISSING),
]
IDS = [f"{t.value}-{v!r}" for t, v, _ in CASES]


def signature(kind: FeatureType) -> Signature:
    inputs = [InputColumn("x", kind), InputColumn("z", FLOAT, nullable=False)]
    return Signature(inputs=inputs, output=Output(Task.REGRESSION, "float"))


def data_spec(kind: FeatureType) -> DataSpec:
    return DataSpec.model_validate(
        {
            "source": {"kind": "csv", "path": "data.csv"},
            "target": "y",
            "features": {"x": kind.value, "z": "float"},
        }
    )


def plain(value: Any) -> Any:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    return value.item() if hasattr(value, "item") else value


# --- ingest -----------------------------------------------------------------------------------


def ingested(frame: pd.DataFrame, kind: FeatureType) -> Any:
    result = validate(frame, data_spec(kind))
    if len(result.rejects):
        assert "x: " in result.rejects["_reason"].iloc[0]
        return Refused("")
    return plain(result.valid["x"].iloc[0])


def from_csv_file(tmp_path: Path, value: str | None, kind: FeatureType) -> Any:
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows([["x", "z", "y"], [value or "", 1.0, 1]])
    (tmp_path / "data.csv").write_text(text.getvalue(), encoding="utf-8")
    batch = open_source(CsvSource(kind="csv", path="data.csv"), tmp_path).read_new({})
    return ingested(batch.frame, kind)


def verdict(expected: Any) -> Any:
    return Refused("") if isinstance(expected, Refused) else expected


@pytest.mark.parametrize(("kind", "value", "expected"), CASES, ids=IDS)
def test_ingest_gives_the_tables_verdict(
    tmp_path: Path, kind: FeatureType, value: Any, expected: Any
) -> None:
    objects = pd.DataFrame({"x": pd.Series([value], dtype=object), "z": [1.0], "y": [1]})
    assert ingested(objects, kind) == verdict(expected), "a column of objects"
    if value is not None and not isinstance(value, str):
        typed = pd.DataFrame({"x": pd.Series([value]), "z": [1.0], "y": [1]})
        assert ingested(typed, kind) == verdict(expected), f"a {typed['x'].dtype} column"
    if value is None or isinstance(value, str):
        assert from_csv_file(tmp_path, value, kind) == verdict(expected), "a CSV file"


@pytest.mark.parametrize(("kind", "value", "expected"), CASES, ids=IDS)
def test_training_sees_the_value_that_serving_sees(
    kind: FeatureType, value: Any, expected: Any
) -> None:
    if isinstance(expected, Refused):
        return
    spec = data_spec(kind)
    frame = pd.DataFrame({"x": pd.Series([value], dtype=object), "z": [1.0], "y": [1]})
    trained = feature_frame(validate(frame, spec).valid, spec)["x"].iloc[0]
    reader = RecordReader(signature(kind), max_rows=100)
    served = feature_frame(reader.one({"x": value, "z": 1.0}), spec)["x"].iloc[0]
    assert plain(trained) == plain(served)
    if kind is CATEGORY and expected != MISSING:
        assert trained == category_text(trained) == expected, "as the ONNX graph is fed"


# --- serving ----------------------------------------------------------------------------------


def served(call: Any) -> Any:
    try:
        frame = call()
    except InputError as error:
        return Refused(error.problems[0].problem)
    return plain(frame["x"].iloc[0])


def v2_datatype(kind: FeatureType, value: Any) -> str:
    natural = (
        "BOOL"
        if isinstance(value, bool)
        else "INT64"
        if isinstance(value, int) and abs(value) < 2**63
        else "FP64"
        if isinstance(value, float)
        else "BYTES"
    )
    return natural if natural in _TAKES[kind] else "BYTES"


@pytest.mark.parametrize(("kind", "value", "expected"), CASES, ids=IDS)
def test_every_serving_path_gives_the_tables_verdict(
    kind: FeatureType, value: Any, expected: Any
) -> None:
    reader = RecordReader(signature(kind), max_rows=100)
    record = {"x": value, "z": 1.0}
    paths = {
        "refit record": lambda: reader.one(record),
        "refit batch, checked whole": lambda: reader.many({"records": [record] * FAST_ROWS}),
        "v2 inputs": lambda: reader.frame(
            tensor_columns(
                reader,
                InferenceRequest(
                    inputs=[
                        RequestInput(
                            name="x", shape=[1], datatype=v2_datatype(kind, value), data=[value]
                        ),
                        RequestInput(name="z", shape=[1], datatype="FP64", data=[1.0]),
                    ]
                ),
                "m",
            )
        ),
        "invocations dataframe_split": lambda: reader.frame(
            json_columns(reader, {"dataframe_split": {"columns": ["x", "z"], "data": [[value, 1]]}})
        ),
        "invocations inputs": lambda: reader.frame(
            json_columns(reader, {"inputs": {"x": [value] * FAST_ROWS, "z": [1.0] * FAST_ROWS}})
        ),
    }
    if value is None or isinstance(value, str):
        text = io.StringIO()
        csv.writer(text, lineterminator="\n").writerows([["x", "z"], [value or "", 1]])
        body = text.getvalue().encode()
        paths["invocations csv"] = lambda: reader.frame(csv_columns(reader, body))
    for path, call in paths.items():
        assert served(call) == expected, path


@pytest.mark.parametrize("kind", [FLOAT, INT, BOOL, CATEGORY], ids=str)
def test_a_batch_checked_whole_takes_each_value_as_the_per_value_checks_do(
    kind: FeatureType,
) -> None:
    reader = RecordReader(signature(kind), max_rows=100)
    values = [v for k, v, expected in CASES if k is kind and not isinstance(expected, Refused)]
    records = [{"x": v, "z": 1.0} for v in values] * FAST_ROWS
    one_by_one = [plain(reader.one(r)["x"].iloc[0]) for r in records]
    assert [plain(v) for v in reader.many({"records": records})["x"]] == one_by_one


def test_numbers_in_text_follow_one_grammar() -> None:
    assert parse_number("12") == 12 and isinstance(parse_number("12"), int)
    assert parse_number(" 1.5 ") == 1.5
    assert parse_number("1,5", decimal=",") == 1.5
    assert parse_number("1,5") is None
    assert parse_number(".5") == 0.5
    for text in ("", "1_000", "0x10", "inf", "nan", "1.5.2", "١٢"):
        assert parse_number(text) is None, text
