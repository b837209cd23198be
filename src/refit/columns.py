"""The columns of a snapshot under the spec: the dtype each one has, and how the columns a
snapshot was made with differ from them.

Ingest gives every validated column its dtype from here (`refit.data.validation`); ingest
rebuilds a snapshot, and training refuses one, when `schema_change` finds that its columns
lack what the spec asks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from refit.spec import DataSpec, Feature, FeatureType

TIME_DTYPE = "datetime64[us, UTC]"
"""The dtype of the time column."""

_FEATURE_DTYPES = {
    FeatureType.FLOAT: "float64",
    FeatureType.BOOL: "boolean",
    FeatureType.CATEGORY: "str",
}


def feature_dtype(feature: Feature) -> str:
    """The pandas dtype of a validated feature column: `Int64` (nullable) or `int64` for an
    int feature, `float64`, `boolean` or `str` for the others."""
    if feature.type is FeatureType.INT:
        return "Int64" if feature.nullable else "int64"
    return _FEATURE_DTYPES[feature.type]


@dataclass(frozen=True)
class SchemaChange:
    """How a snapshot's columns differ from those the spec gives; `str()` tells it, e.g.
    "added: tenure; retyped: plan (float64 -> str)"."""

    added: list[str]
    removed: list[str]
    retyped: list[str]
    """`name (old dtype -> new dtype)`."""

    @property
    def missing_columns(self) -> bool:
        """Whether rows of this snapshot lack what the spec asks (extra columns do no harm)."""
        return bool(self.added or self.retyped)

    def __str__(self) -> str:
        parts = (("added", self.added), ("removed", self.removed), ("retyped", self.retyped))
        return "; ".join(f"{what}: {', '.join(names)}" for what, names in parts if names)


def schema_change(columns: Mapping[str, str], data: DataSpec) -> SchemaChange | None:
    """How a snapshot's columns (name -> dtype) differ from those validation gives under
    `data`; None if they do not.

    The target's type is left out: it follows the values (numbers or text) of each batch. So is
    the order: columns are taken by name.
    """
    wanted: dict[str, str | None] = {
        name: feature_dtype(feature) for name, feature in data.features.items()
    }
    if data.target is not None:
        wanted[data.target] = None
    if data.time_column is not None:
        wanted[data.time_column] = TIME_DTYPE
    change = SchemaChange(
        added=[name for name in wanted if name not in columns],
        removed=[name for name in columns if name not in wanted],
        retyped=[
            f"{name} ({columns[name]} -> {dtype})"
            for name, dtype in wanted.items()
            if dtype is not None and name in columns and columns[name] != dtype
        ],
    )
    return change if change.added or change.removed or change.retyped else None
