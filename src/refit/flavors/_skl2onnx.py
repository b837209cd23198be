"""Fixes to skl2onnx 1.20's converters for the pipelines refit builds, applied while converting.

- HistGradientBoosting's `missing_go_to_left` flags reach onnx as numpy bools, which it
  refuses ("Expected an int, got a boolean"): they are cast to int.
- `SimpleImputer(add_indicator=True)` (refit's imputer of a nullable feature) loses its
  missing-value indicator columns: the converter ignores `add_indicator`, so the graph has
  fewer columns than the estimator reads (a failed conversion, or a model that fails at its
  first run). Here: the imputed values, then one 0/1 column per feature the fitted indicator
  flags, as scikit-learn gives them.
- A string `SimpleImputer` converts only when its `missing_values` is a string, where refit's
  category branch has NaN and None: a missing category is fed to ONNX as `MISSING_CATEGORY`, and
  the imputer converted as replacing that text.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import Any

import numpy as np

from refit.values import MISSING_CATEGORY


@contextlib.contextmanager
def fixed_converters() -> Iterator[None]:
    """Convert with the fixes above in place (and skl2onnx's own converters after)."""
    from skl2onnx import update_registered_converter
    from skl2onnx.common import tree_ensemble
    from skl2onnx.operator_converters.imputer_op import convert_sklearn_imputer
    from skl2onnx.shape_calculators.imputer import calculate_sklearn_imputer_output_shapes
    from sklearn.impute import SimpleImputer

    original = tree_ensemble.add_node

    def add_node(*args: Any, **kwargs: Any) -> Any:
        if "nodes_missing_value_tracks_true" in kwargs:
            kwargs["nodes_missing_value_tracks_true"] = int(
                kwargs["nodes_missing_value_tracks_true"]
            )
        return original(*args, **kwargs)

    tree_ensemble.add_node = add_node
    update_registered_converter(
        SimpleImputer, "SklearnSimpleImputer", _imputer_shape, _imputer, overwrite=True
    )
    try:
        yield
    finally:
        tree_ensemble.add_node = original
        update_registered_converter(
            SimpleImputer,
            "SklearnSimpleImputer",
            calculate_sklearn_imputer_output_shapes,
            convert_sklearn_imputer,
            overwrite=True,
        )


def _flagged(imputer: Any) -> list[int]:
    indicator = getattr(imputer, "indicator_", None)
    return [] if indicator is None else [int(i) for i in indicator.features_]


def _imputer_shape(operator: Any) -> None:
    from skl2onnx.shape_calculators.imputer import calculate_sklearn_imputer_output_shapes

    calculate_sklearn_imputer_output_shapes(operator)
    extra = len(_flagged(operator.raw_operator))
    if extra:
        rows, columns = operator.outputs[0].type.shape
        operator.outputs[0].type.shape = [rows, None if columns is None else columns + extra]


def _imputer(scope: Any, operator: Any, container: Any) -> None:
    from skl2onnx.common._apply_operation import apply_cast, apply_concat
    from skl2onnx.common.data_types import StringTensorType
    from skl2onnx.operator_converters.common import concatenate_variables
    from skl2onnx.operator_converters.imputer_op import convert_sklearn_imputer
    from skl2onnx.proto import onnx_proto

    imputer = operator.raw_operator
    if isinstance(operator.inputs[0].type, StringTensorType):
        if imputer.add_indicator:
            raise NotImplementedError("a missing-value indicator on categories")
        if isinstance(imputer.missing_values, str):
            convert_sklearn_imputer(scope, operator, container)
            return
        operator.raw_operator = copy.copy(imputer)
        operator.raw_operator.missing_values = MISSING_CATEGORY
        try:
            convert_sklearn_imputer(scope, operator, container)
        finally:
            operator.raw_operator = imputer
        return
    flagged = _flagged(imputer)
    if not flagged:
        convert_sklearn_imputer(scope, operator, container)
        return
    if not (isinstance(imputer.missing_values, float) and np.isnan(imputer.missing_values)):
        raise NotImplementedError(f"an indicator of missing_values={imputer.missing_values!r}")
    x = concatenate_variables(scope, operator.inputs, container)

    def name(base: str) -> str:
        return str(scope.get_unique_variable_name(base))

    imputed, isnan, flags, index, chosen = (
        name(n) for n in ("imputed", "isnan", "flags", "flagged", "indicator")
    )
    container.add_node(
        "Imputer",
        x,
        imputed,
        op_domain="ai.onnx.ml",
        name=scope.get_unique_operator_name("Imputer"),
        imputed_value_floats=imputer.statistics_.astype(np.float32),
        replaced_value_float=float("nan"),
    )
    container.add_node("IsNaN", x, isnan, name=scope.get_unique_operator_name("IsNaN"))
    apply_cast(scope, isnan, flags, container, to=onnx_proto.TensorProto.FLOAT)
    container.add_initializer(index, onnx_proto.TensorProto.INT64, [len(flagged)], flagged)
    container.add_node(
        "Gather", [flags, index], chosen, axis=1, name=scope.get_unique_operator_name("Gather")
    )
    apply_concat(scope, [imputed, chosen], operator.outputs[0].full_name, container, axis=1)
