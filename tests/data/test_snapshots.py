import io
from collections.abc import Callable

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from refit.data.snapshots import combine, content_id
from refit.errors import DataError
from refit.parquet import from_parquet, to_parquet
from refit.spec import SnapshotMode, SnapshotPolicy


def rows(ids: list[int], start: str = "2024-05-01") -> pd.DataFrame:
    """Rows with an id, a value and one timestamp per day from `start`."""
    return pd.DataFrame(
        {
            "id": pd.array(ids, dtype="Int64"),
            "value": [float(i) for i in ids],
            "at": pd.date_range(start, periods=len(ids), freq="D", tz="UTC", unit="us"),
        }
    )


def every_type() -> pd.DataFrame:
    """One column of each validated dtype, each with a missing value where it can hold one."""
    return pd.DataFrame(
        {
            "f": [1.5, np.nan, -0.0],
            "i": pd.array([1, None, 2**60], dtype="Int64"),
            "n": np.array([1, 2, 3], dtype="int64"),
            "b": pd.array([True, None, False], dtype="boolean"),
            "c": pd.Series(["a", None, "é"], dtype="str"),
            "y": pd.Series(["spam", "ham", "spam"], dtype="str"),
            "t": pd.to_datetime(
                pd.Series(["2024-05-01T10:00:00.123456Z", None, "1900-01-01"]),
                format="ISO8601",
                utc=True,
            ).astype("datetime64[us, UTC]"),
        }
    )


CUMULATIVE = SnapshotPolicy()
LATEST = SnapshotPolicy(mode=SnapshotMode.LATEST)


def test_cumulative_appends_the_new_rows() -> None:
    combined = combine(rows([1, 2]), rows([3]).set_axis([10]), CUMULATIVE, "at")
    assert combined["id"].tolist() == [1, 2, 3]
    assert combined.index.tolist() == [0, 1, 2]


def test_the_first_snapshot_is_the_new_rows() -> None:
    assert combine(None, rows([1]).set_axis([5]), CUMULATIVE, None).index.tolist() == [0]


def test_latest_keeps_only_the_new_rows() -> None:
    assert combine(rows([1, 2]), rows([3]), LATEST, None)["id"].tolist() == [3]


def test_a_window_of_rows_keeps_the_last_ones() -> None:
    policy = SnapshotPolicy(mode=SnapshotMode.WINDOW, rows=3)
    assert combine(rows([1, 2]), rows([3, 4]), policy, None)["id"].tolist() == [2, 3, 4]


def test_a_window_of_days_counts_back_from_the_newest_time() -> None:
    policy = SnapshotPolicy(mode=SnapshotMode.WINDOW, days=2)
    previous = rows([1, 2, 3], start="2024-05-01")  # May 1, 2, 3
    new = rows([4], start="2024-05-04")
    assert combine(previous, new, policy, "at")["id"].tolist() == [2, 3, 4]


def test_a_window_of_days_and_rows_applies_both() -> None:
    policy = SnapshotPolicy(mode=SnapshotMode.WINDOW, days=2, rows=2)
    previous = rows([1, 2, 3], start="2024-05-01")
    assert combine(previous, rows([4], start="2024-05-04"), policy, "at")["id"].tolist() == [3, 4]


def test_a_window_of_days_needs_a_time_column() -> None:
    policy = SnapshotPolicy(mode=SnapshotMode.WINDOW, days=1)
    with pytest.raises(DataError, match="a window of 1 days needs a time column"):
        combine(None, rows([1]), policy, None)


def test_new_rows_take_the_snapshot_column_order_and_types() -> None:
    new = rows([3])[["at", "value", "id"]].astype({"id": "int64"})
    combined = combine(rows([1]), new, CUMULATIVE, "at")
    assert list(combined.columns) == ["id", "value", "at"]
    assert str(combined["id"].dtype) == "Int64"


def test_different_columns_are_an_error() -> None:
    new = rows([3]).drop(columns="value").assign(other=1)
    with pytest.raises(DataError) as caught:
        combine(rows([1]), new, CUMULATIVE, None)
    assert str(caught.value) == (
        "the new rows do not have the snapshot's columns; missing: value; "
        "not in the snapshot: other"
    )


def test_incompatible_types_are_an_error() -> None:
    previous = pd.DataFrame({"y": [1.0]})
    new = pd.DataFrame({"y": pd.Series(["spam"], dtype="str")})
    with pytest.raises(DataError, match="column y: the new rows hold str but the snapshot holds"):
        combine(previous, new, CUMULATIVE, None)


def test_the_id_depends_on_the_rows_not_on_the_index() -> None:
    frame = every_type()
    assert content_id(frame) == content_id(frame.set_axis([9, 8, 7]))
    assert content_id(frame) == content_id(pd.concat([frame.iloc[:1], frame.iloc[1:]]))
    assert len(content_id(frame)) == 64


@pytest.mark.parametrize(
    "change",
    [
        lambda f: f.assign(f=[1.5, np.nan, 0.5]),
        lambda f: f.assign(i=pd.array([1, 0, 2**60], dtype="Int64")),  # NA -> 0
        lambda f: f.assign(c=pd.Series(["a", "", "é"], dtype="str")),  # missing -> ""
        lambda f: f.assign(c=pd.Series(["ab", None, ""], dtype="str")),  # same characters
        lambda f: f.assign(b=pd.array([True, False, False], dtype="boolean")),
        lambda f: f.astype({"n": "Int64"}),
        lambda f: f.rename(columns={"n": "m"}),
        lambda f: f[list(reversed(f.columns))],
        lambda f: f.iloc[::-1],
        lambda f: f.iloc[:2],
    ],
)
def test_different_rows_have_a_different_id(
    change: Callable[[pd.DataFrame], pd.DataFrame],
) -> None:
    frame = every_type()
    assert content_id(change(frame)) != content_id(frame)


def test_values_hidden_under_missing_slots_do_not_change_the_id() -> None:
    first = pd.Series(pd.arrays.IntegerArray(np.array([1, 7]), np.array([False, True])))
    second = pd.Series(pd.arrays.IntegerArray(np.array([1, 0]), np.array([False, True])))
    assert content_id(first.to_frame("x")) == content_id(second.to_frame("x"))


def test_parquet_round_trips_types_nulls_and_the_id() -> None:
    frame = every_type()
    back = from_parquet(to_parquet(frame))
    pd.testing.assert_frame_equal(back, frame)
    assert content_id(back) == content_id(frame)


def test_parquet_bytes_are_deterministic_and_carry_no_pandas_metadata() -> None:
    frame = every_type()
    data = to_parquet(frame)
    assert to_parquet(frame.set_axis([3, 4, 5])) == data
    metadata = pq.read_metadata(io.BytesIO(data))
    assert set(metadata.metadata) == {b"refit.dtypes", b"ARROW:schema"}
    assert metadata.row_group(0).column(0).compression == "ZSTD"


def test_an_empty_frame_round_trips() -> None:
    frame = every_type().iloc[:0]
    pd.testing.assert_frame_equal(from_parquet(to_parquet(frame)), frame)
