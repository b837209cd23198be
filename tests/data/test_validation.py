import time
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from sklearn.compose import make_column_transformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

from refit.data.validation import validate
from refit.errors import DataError
from refit.parquet import from_parquet, to_parquet
from refit.spec import DataSpec


def data_spec(features: dict[str, Any], time_column: str | None = None) -> DataSpec:
    return DataSpec.model_validate(
        {
            "source": {"kind": "csv", "path": "data"},
            "target": "y",
            "features": features,
            "time_column": time_column,
        }
    )


def reasons(frame: pd.DataFrame, features: dict[str, Any]) -> list[str]:
    return validate(frame, data_spec(features)).rejects["_reason"].tolist()


def test_valid_rows_get_their_types_in_spec_order() -> None:
    spec = data_spec(
        {
            "price": "float",
            "rooms": "int",
            "floor": {"type": "int", "nullable": False},
            "garden": "bool",
            "city": "category",
        },
        time_column="at",
    )
    raw = pd.DataFrame(
        {
            "extra": ["dropped", "dropped", "dropped"],
            "at": ["2024-05-01T10:00:00Z", "2024-05-01 12:00:00+02:00", "2024-05-02"],
            "y": [1, 0, 1],
            "city": ["paris", None, "lyon"],
            "garden": ["Yes", "false", None],
            "floor": [1, 2.0, "3"],
            "rooms": ["2", None, 4.0],
            "price": ["1.5", "2", None],
        }
    )
    valid = validate(raw, spec).valid
    assert list(valid.columns) == ["price", "rooms", "floor", "garden", "city", "y", "at"]
    assert {name: str(dtype) for name, dtype in valid.dtypes.items()} == {
        "price": "float64",
        "rooms": "Int64",
        "floor": "int64",
        "garden": "boolean",
        "city": "str",
        "y": "float64",
        "at": "datetime64[us, UTC]",
    }
    assert valid["price"].tolist()[:2] == [1.5, 2.0] and np.isnan(valid["price"][2])
    assert valid["rooms"].tolist() == [2, pd.NA, 4]
    assert valid["floor"].tolist() == [1, 2, 3]
    assert valid["garden"].tolist() == [True, False, pd.NA]
    assert valid["city"].isna().tolist() == [False, True, False]
    assert valid["y"].tolist() == [1.0, 0.0, 1.0]
    assert valid["at"].tolist() == [
        pd.Timestamp("2024-05-01T10:00:00Z"),
        pd.Timestamp("2024-05-01T10:00:00Z"),
        pd.Timestamp("2024-05-02T00:00:00Z"),
    ]
    assert validate(raw, spec).rejects.empty


def test_missing_columns_refuse_the_whole_batch() -> None:
    frame = pd.DataFrame({"a": [1], "z": [2]})
    with pytest.raises(DataError) as caught:
        validate(frame, data_spec({"a": "float", "b": "float", "c": "int"}, time_column="t"))
    assert str(caught.value) == (
        "the batch has no column 'b', 'c', 'y', 't' (required by the spec); its columns are: a, z"
    )


def test_rejects_keep_the_raw_row_its_position_and_every_reason() -> None:
    frame = pd.DataFrame(
        {"mean radius": ["1.5", "abc", "2"], "kind": ["a", "b", "z"], "y": [1, None, 0]}
    )
    spec = data_spec({"mean radius": "float", "kind": {"type": "category", "values": ["a", "b"]}})
    result = validate(frame, spec)
    assert result.valid["mean radius"].tolist() == [1.5]
    rejects = result.rejects
    assert list(rejects.columns) == ["mean radius", "kind", "y", "_row", "_reason"]
    assert rejects["mean radius"].tolist() == ["abc", "2"]
    assert rejects["kind"].tolist() == ["b", "z"]
    assert rejects["y"].isna().tolist() == [True, False] and rejects["y"][1] == "0.0"
    assert rejects["_row"].tolist() == [1, 2]
    assert rejects["_reason"].tolist() == [
        "mean radius: 'abc' is not a number; y: missing target",
        "kind: 'z' is not one of the allowed values: a, b",
    ]


def test_numbers() -> None:
    frame = pd.DataFrame({"x": ["1", "abc", "inf", "-1", "11", None], "y": [1, 1, 1, 1, 1, 1]})
    assert reasons(frame, {"x": {"type": "float", "min": 0, "max": 10}}) == [
        "x: 'abc' is not a number",
        "x: 'inf' is not a number",
        "x: '-1' is below the minimum 0",
        "x: '11' is above the maximum 10",
    ]
    assert reasons(frame.iloc[[5]], {"x": {"type": "float", "nullable": False}}) == [
        "x: missing value (the feature is not nullable)"
    ]


def test_integers() -> None:
    frame = pd.DataFrame({"n": [2.0, 2.5, 1e20, "x", 7], "y": [1, 1, 1, 1, 1]})
    result = validate(frame, data_spec({"n": {"type": "int", "max": 5}}))
    assert result.valid["n"].tolist() == [2]
    assert result.rejects["_reason"].tolist() == [
        "n: '2.5' is not an integer",
        "n: '1e+20' is outside the 64-bit integer range",
        "n: 'x' is not a number",
        "n: '7' is above the maximum 5",
    ]


def test_large_integers_stay_exact() -> None:
    frame = pd.DataFrame({"n": [2**60 + 1], "y": [1]})
    assert validate(frame, data_spec({"n": "int"})).valid["n"].tolist() == [2**60 + 1]


def test_booleans() -> None:
    words = ["TRUE", " no ", "Yes", "0", "1.0", True, "maybe", 2]
    frame = pd.DataFrame({"b": pd.Series(words, dtype=object), "y": [1] * 8})
    result = validate(frame, data_spec({"b": "bool"}))
    assert result.valid["b"].tolist() == [True, False, True, False, True, True]
    assert result.rejects["_reason"].tolist() == [
        "b: 'maybe' is not a boolean (expected true/false, yes/no or 1/0)",
        "b: '2' is not a boolean (expected true/false, yes/no or 1/0)",
    ]
    numeric = pd.DataFrame({"b": [1.0, 0.0, np.nan], "y": [1, 1, 1]})
    assert validate(numeric, data_spec({"b": "bool"})).valid["b"].tolist() == [True, False, pd.NA]


def test_categories_are_text_and_integral_floats_lose_their_point() -> None:
    floats = pd.DataFrame({"c": [1.0, 2.5, np.nan], "y": [1, 1, 1]})
    assert validate(floats, data_spec({"c": "category"})).valid["c"].tolist()[:2] == ["1", "2.5"]
    ints = pd.DataFrame({"c": [1, 20], "y": [1, 1]})
    assert validate(ints, data_spec({"c": "category"})).valid["c"].tolist() == ["1", "20"]
    mixed = pd.DataFrame({"c": pd.Series([3.0, "a", 4], dtype=object), "y": [1, 1, 1]})
    assert validate(mixed, data_spec({"c": "category"})).valid["c"].tolist() == ["3", "a", "4"]
    blank = pd.DataFrame({"c": ["  ", "a"], "y": [1, 1]})
    assert reasons(blank, {"c": {"type": "category", "nullable": False}}) == [
        "c: missing value (the feature is not nullable)"
    ]


def test_a_long_list_of_allowed_values_is_shortened() -> None:
    values = [f"v{i}" for i in range(12)]
    frame = pd.DataFrame({"c": ["nope"], "y": [1]})
    assert reasons(frame, {"c": {"type": "category", "values": values}}) == [
        "c: 'nope' is not one of the allowed values: "
        "v0, v1, v2, v3, v4, v5, v6, v7, v8, v9, ... (12 values)"
    ]


def test_the_target_is_numeric_only_when_every_value_is() -> None:
    spec = data_spec({"x": "float"})
    numeric = validate(pd.DataFrame({"x": [1, 2], "y": ["1", "2.5"]}), spec).valid
    assert numeric["y"].dtype == "float64" and numeric["y"].tolist() == [1.0, 2.5]
    labels = validate(pd.DataFrame({"x": [1, 2, 3], "y": ["cat", 1.0, None]}), spec)
    assert str(labels.valid["y"].dtype) == "str"
    assert labels.valid["y"].tolist() == ["cat", "1"]
    assert labels.rejects["_reason"].tolist() == ["y: missing target"]
    flags = validate(pd.DataFrame({"x": [1, 2], "y": [True, False]}), spec).valid
    assert flags["y"].tolist() == ["True", "False"]
    infinite = validate(pd.DataFrame({"x": [1, 2], "y": [1.0, np.inf]}), spec)
    assert infinite.rejects["_reason"].tolist() == ["y: 'inf' is not a finite number"]


def test_time_values() -> None:
    frame = pd.DataFrame(
        {
            "x": [1.0] * 5,
            "y": [1] * 5,
            "t": ["2024-05-01T10:00:00+02:00", "05/02/2024 10:00", "never", None, "2024-05-03"],
        }
    )
    result = validate(frame, data_spec({"x": "float"}, time_column="t"))
    assert result.valid["t"].tolist() == [
        pd.Timestamp("2024-05-01T08:00:00Z"),
        pd.Timestamp("2024-05-02T10:00:00Z"),
        pd.Timestamp("2024-05-03T00:00:00Z"),
    ]
    assert result.rejects["_reason"].tolist() == [
        "t: 'never' is not a timestamp",
        "t: missing timestamp",
    ]
    seconds = pd.DataFrame({"x": [1.0], "y": [1], "t": [1_714_557_600]})
    valid = validate(seconds, data_spec({"x": "float"}, time_column="t")).valid
    assert valid["t"].tolist() == [pd.Timestamp("2024-05-01T10:00:00Z")]
    naive = pd.DataFrame({"x": [1.0], "y": [1], "t": pd.to_datetime(["2024-05-01 10:00"])})
    valid = validate(naive, data_spec({"x": "float"}, time_column="t")).valid
    assert valid["t"].tolist() == [pd.Timestamp("2024-05-01T10:00:00Z")]


def test_the_index_of_the_batch_does_not_matter() -> None:
    frame = pd.DataFrame({"x": ["1", "bad", "3"], "y": [1, 1, 1]}, index=[10, 5, 7])
    result = validate(frame, data_spec({"x": "float"}))
    assert result.valid["x"].tolist() == [1.0, 3.0]
    assert result.valid.index.tolist() == [0, 1]
    assert result.rejects["_row"].tolist() == [1]


def test_an_empty_batch_with_the_columns_is_valid_and_empty() -> None:
    frame = pd.DataFrame({"x": pd.Series([], dtype="float64"), "y": pd.Series([], dtype="str")})
    result = validate(frame, data_spec({"x": "float"}))
    assert result.valid.empty and result.rejects.empty
    assert list(result.rejects.columns) == ["x", "y", "_row", "_reason"]


def test_valid_rows_survive_parquet_and_feed_scikit_learn() -> None:
    raw = pd.DataFrame(
        {
            "f": [1.0, None, 3.0, 4.0],
            "i": [1, None, 3, 4],
            "b": ["yes", None, "no", "yes"],
            "c": ["a", None, "b", "a"],
            "y": ["spam", "ham", "spam", "ham"],
        }
    )
    spec = data_spec({"f": "float", "i": "int", "b": "bool", "c": "category"})
    valid = from_parquet(to_parquet(validate(raw, spec).valid))
    assert {c: str(t) for c, t in valid.dtypes.items()} == {
        "f": "float64",
        "i": "Int64",
        "b": "boolean",
        "c": "str",
        "y": "str",
    }
    features = valid.drop(columns="y")
    model = make_pipeline(
        make_column_transformer(
            (SimpleImputer(strategy="most_frequent"), ["f", "i", "b"]),
            (
                make_pipeline(
                    SimpleImputer(strategy="most_frequent"), OneHotEncoder(handle_unknown="ignore")
                ),
                ["c"],
            ),
        ),
        LogisticRegression(),
    )
    model.fit(features, valid["y"])
    assert set(model.predict(features)) <= {"spam", "ham"}


def test_a_million_rows_take_seconds() -> None:
    rows = 1_000_000
    cycle = pa.array(np.arange(rows, dtype="int32") % 4)

    def text(*words: str) -> pa.Array:
        return pa.DictionaryArray.from_arrays(cycle, pa.array(words)).cast(pa.string())

    numbers = np.where(np.arange(rows) % 1000 == 0, 4, np.arange(rows) % 4).astype("int32")
    floats = pa.DictionaryArray.from_arrays(pa.array(numbers), ["1.5", "-0.25", "3", "1e3", "oops"])
    frame = pa.table(
        {
            "f": floats.cast(pa.string()),
            "i": np.arange(rows) % 7,
            "b": text("true", "no", "Yes", "0"),
            "c": text("a", "b", "c", "b"),
            "y": np.arange(rows) % 2,
        }
    ).to_pandas()
    spec = data_spec({"f": "float", "i": "int", "b": "bool", "c": "category"})
    start = time.perf_counter()
    result = validate(frame, spec)
    assert time.perf_counter() - start < 5
    assert len(result.rejects) == 1000 and len(result.valid) == rows - 1000
    assert result.rejects["_reason"].iloc[-1] == "f: 'oops' is not a number"
