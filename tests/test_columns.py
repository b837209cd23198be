import pandas as pd
import pytest

from refit.columns import TIME_DTYPE, SchemaChange, feature_dtype, schema_change
from refit.data.validation import validate
from refit.spec import DataSpec

FEATURES = {
    "price": "float",
    "rooms": "int",
    "floor": {"type": "int", "nullable": False},
    "garden": "bool",
    "city": "category",
}


def data_spec(features: dict[str, object], time_column: str | None = "at") -> DataSpec:
    return DataSpec.model_validate(
        {
            "source": {"kind": "csv", "path": "data"},
            "target": "y",
            "features": features,
            "time_column": time_column,
        }
    )


@pytest.mark.parametrize("rows", [0, 2])
def test_validated_columns_have_the_dtypes_that_snapshots_are_compared_with(rows: int) -> None:
    data = data_spec(FEATURES)
    raw = pd.DataFrame(
        {
            "price": ["1.5", None],
            "rooms": [2, None],
            "floor": [1, 2],
            "garden": ["yes", None],
            "city": ["paris", 3],
            "y": [1, 0],
            "at": ["2024-05-01", "2024-05-02T10:00:00Z"],
        }
    ).head(rows)
    dtypes = {str(name): str(dtype) for name, dtype in validate(raw, data).valid.dtypes.items()}
    assert {name: dtypes[name] for name in FEATURES} == {
        name: feature_dtype(feature) for name, feature in data.features.items()
    }
    assert dtypes["at"] == TIME_DTYPE
    assert schema_change(dtypes, data) is None


def test_a_snapshot_made_under_another_spec_is_told_apart() -> None:
    before = {"price": "float64", "city": "float64", "old": "int64", "y": "str"}
    change = schema_change(before, data_spec({"price": "float", "city": "category", "n": "int"}))
    assert change == SchemaChange(
        added=["n", "at"], removed=["old"], retyped=["city (float64 -> str)"]
    )
    assert change.missing_columns
    assert str(change) == "added: n, at; removed: old; retyped: city (float64 -> str)"


def test_extra_columns_and_the_target_type_do_not_lack_anything() -> None:
    columns = {"price": "float64", "y": "float64", "extra": "str"}
    change = schema_change(columns, data_spec({"price": "float"}, time_column=None))
    assert change is not None and not change.missing_columns
    assert (
        schema_change({"price": "float64", "y": "str"}, data_spec({"price": "float"}, None)) is None
    )
