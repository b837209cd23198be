"""XGBoost's and LightGBM's scikit-learn estimators in skl2onnx's conversion, through
onnxmltools' converters.

skl2onnx knows neither library: `converters_for(model)` registers onnxmltools' converter for
the booster that ends a pipeline (or is the model), with skl2onnx's own shape calculators, so
that the whole pipeline converts as one graph. Nothing is imported unless the model holds one.
onnxmltools writes `TreeEnsembleClassifier` / `TreeEnsembleRegressor` nodes, which the
`ai.onnx.ml` domain has only up to version 3 (version 5 replaced them with `TreeEnsemble`):
such a graph is converted with that domain at version 3.
"""

from __future__ import annotations

from typing import Any

#: The classes converted, by the library's module and class name, and whether each classifies.
BOOSTERS: dict[tuple[str, str], bool] = {
    ("xgboost", "XGBClassifier"): True,
    ("xgboost", "XGBRegressor"): False,
    ("lightgbm", "LGBMClassifier"): True,
    ("lightgbm", "LGBMRegressor"): False,
}

#: The `ai.onnx.ml` version that still has onnxmltools' tree ensemble operators.
ML_OPSET = 3


def converters_for(model: Any) -> dict[str, int] | None:
    """Register the converter of the booster `model` ends in, if it ends in one, and give the
    opsets to convert it with (None: it ends in no booster, skl2onnx's defaults apply)."""
    final = _final_estimator(model)
    kind = type(final)
    match = next((key for base in kind.__mro__ if (key := _key(base)) in BOOSTERS), None)
    if match is None:
        return None
    from skl2onnx import get_latest_tested_opset_version, update_registered_converter
    from skl2onnx.common.shape_calculator import (
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )

    library, _ = match
    if library == "xgboost":
        booster = final.get_params().get("booster")
        if booster not in (None, "gbtree"):  # onnxmltools fails on the others' model dump
            raise NotImplementedError(
                "onnxmltools converts XGBoost's tree booster (booster='gbtree'), "
                f"not booster={booster!r}"
            )
        from onnxmltools.convert.xgboost.operator_converters.XGBoost import (  # type: ignore[import-untyped]
            convert_xgboost as converter,
        )
    else:
        from onnxmltools.convert.lightgbm.operator_converters.LightGbm import (  # type: ignore[import-untyped]
            convert_lightgbm as converter,
        )
    classifier = BOOSTERS[match]
    update_registered_converter(
        kind,
        f"Refit{library.capitalize()}{kind.__qualname__}",
        calculate_linear_classifier_output_shapes
        if classifier
        else calculate_linear_regressor_output_shapes,
        converter,
        # zipmap: refit reads probabilities as one [rows, classes] tensor.
        options={"nocl": [True, False], "zipmap": [True, False, "columns"]} if classifier else None,
    )
    return {"": get_latest_tested_opset_version(), "ai.onnx.ml": ML_OPSET}


def _final_estimator(model: Any) -> Any:
    steps = getattr(model, "steps", None)
    while isinstance(steps, list) and steps:
        model = steps[-1][1]
        steps = getattr(model, "steps", None)
    return model


def _key(cls: type) -> tuple[str, str]:
    return cls.__module__.partition(".")[0], cls.__name__
