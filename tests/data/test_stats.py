import json
from typing import Any

import numpy as np
import pandas as pd
import pytest

from refit.data.stats import column_stats
from refit.errors import DataError
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


def test_numeric_columns() -> None:
    values = np.arange(101, dtype="float64")
    frame = pd.DataFrame({"x": [*values, np.nan, np.nan], "y": 1.0})
    stats = column_stats(frame, data_spec({"x": "float"}))["x"]
    assert stats["kind"] == "numeric"
    assert stats["count"] == 101 and stats["nulls"] == 2
    assert stats["mean"] == 50.0
    assert stats["std"] == pytest.approx(np.std(values, ddof=1), rel=1e-15)
    assert (stats["min"], stats["max"]) == (0.0, 100.0)
    assert stats["quantiles"] == {
        "p01": 1.0,
        "p05": 5.0,
        "p25": 25.0,
        "p50": 50.0,
        "p75": 75.0,
        "p95": 95.0,
        "p99": 99.0,
    }
    assert stats["histogram"]["edges"] == [float(e) for e in range(0, 101, 10)]
    assert stats["histogram"]["counts"] == [10] * 9 + [11]  # the last bin holds its right edge


def test_nullable_integers_are_numeric() -> None:
    frame = pd.DataFrame({"n": pd.array([1, None, 3], dtype="Int64"), "y": 1.0})
    stats = column_stats(frame, data_spec({"n": "int"}))["n"]
    assert (stats["count"], stats["nulls"], stats["mean"], stats["max"]) == (2, 1, 2.0, 3.0)


def test_a_constant_column_has_a_histogram_around_its_value() -> None:
    frame = pd.DataFrame({"x": [2.0, 2.0, 2.0], "y": 1.0})
    stats = column_stats(frame, data_spec({"x": "float"}))["x"]
    edges = stats["histogram"]["edges"]
    assert len(edges) == 11 and edges[0] == 1.5 and edges[-1] == 2.5
    assert sum(stats["histogram"]["counts"]) == 3
    assert stats["std"] == 0.0


def test_an_empty_column_has_no_numbers() -> None:
    frame = pd.DataFrame({"x": [np.nan], "y": 1.0})
    stats = column_stats(frame, data_spec({"x": "float"}))["x"]
    assert stats == {
        "kind": "numeric",
        "count": 0,
        "nulls": 1,
        "mean": None,
        "std": None,
        "min": None,
        "max": None,
        "quantiles": dict.fromkeys(["p01", "p05", "p25", "p50", "p75", "p95", "p99"]),
        "histogram": None,
    }
    assert column_stats(frame.iloc[:0], data_spec({"x": "float"}))["x"]["count"] == 0


def test_categories_count_the_top_fifty_and_the_rest() -> None:
    values = [f"v{i:02d}" for i in range(60) for _ in range(60 - i)] + [None]
    frame = pd.DataFrame({"c": pd.Series(values, dtype="str"), "y": 1.0})
    stats = column_stats(frame, data_spec({"c": "category"}))["c"]
    assert stats["kind"] == "categorical"
    assert stats["count"] == len(values) - 1 and stats["nulls"] == 1
    assert list(stats["frequencies"]) == [f"v{i:02d}" for i in range(50)]
    assert stats["frequencies"]["v00"] == 60
    assert stats["other"] == sum(60 - i for i in range(50, 60))


def test_ties_are_ordered_by_value() -> None:
    frame = pd.DataFrame({"c": ["b", "a", "c", "a", "b"], "y": 1.0})
    frequencies = column_stats(frame, data_spec({"c": "category"}))["c"]["frequencies"]
    assert list(frequencies.items()) == [("a", 2), ("b", 2), ("c", 1)]


def test_booleans_are_counted_as_true_and_false() -> None:
    frame = pd.DataFrame({"b": pd.array([True, False, True, None], dtype="boolean"), "y": 1.0})
    stats = column_stats(frame, data_spec({"b": "bool"}))["b"]
    assert stats == {
        "kind": "categorical",
        "count": 3,
        "nulls": 1,
        "frequencies": {"true": 2, "false": 1},
        "other": 0,
    }


def test_the_target_and_the_time_column() -> None:
    frame = pd.DataFrame(
        {
            "x": [1.0, 2.0],
            "y": pd.Series(["spam", "ham"], dtype="str"),
            "t": pd.to_datetime(["2024-05-02T10:00:00Z", "2024-05-01T08:30:00Z"]),
        }
    )
    stats = column_stats(frame, data_spec({"x": "float"}, time_column="t"))
    assert list(stats) == ["x", "y", "t"]
    assert stats["y"]["frequencies"] == {"ham": 1, "spam": 1}
    assert stats["t"] == {
        "kind": "time",
        "count": 2,
        "nulls": 0,
        "min": "2024-05-01T08:30:00+00:00",
        "max": "2024-05-02T10:00:00+00:00",
    }
    numeric = column_stats(frame.assign(y=[0.5, 1.5]), data_spec({"x": "float"}))
    assert numeric["y"]["kind"] == "numeric" and numeric["y"]["mean"] == 1.0


def test_stats_are_strict_json_and_stable() -> None:
    frame = pd.DataFrame(
        {
            "x": [0.1, 0.2, np.nan, 0.3],
            "c": ["a", None, "b", "a"],
            "y": [1.0, 0.0, 1.0, 0.0],
        }
    )
    spec = data_spec({"x": "float", "c": "category"})
    text = json.dumps(column_stats(frame, spec), allow_nan=False)
    shuffled_index = frame.set_axis([7, 3, 9, 1])
    assert json.dumps(column_stats(shuffled_index, spec), allow_nan=False) == text


def test_a_missing_column_is_an_error() -> None:
    with pytest.raises(DataError, match="no column x to describe"):
        column_stats(pd.DataFrame({"y": [1.0]}), data_spec({"x": "float"}))
