"""From a spec's features and model to a fitted model.

A model given as `estimator` becomes a scikit-learn `Pipeline` of two steps:

- `features`, a `ColumnTransformer` built from the feature schema. Numeric features (float,
  int) are imputed with the median, with a missing-value indicator when nullable, and
  standardised unless the estimator is indifferent to scale (see `wants_scaling`). Bool
  features become 0/1, imputed with the most frequent value. Category features are imputed
  with the constant `refit.values.MISSING_CATEGORY` and one-hot encoded; a category never
  seen in training encodes as all zeros. One encoding serves every estimator,
  HistGradientBoosting included (its native categorical support would need more
  per-estimator wiring for little gain at the cardinalities a spec declares). The output is a
  dense array.
- `estimator`, the estimator named in the spec, built with `model.params` (and, for an
  anomaly detector, `model.contamination` as its `contamination` or `nu`). It must be of the
  task's kind: a classifier, a regressor, a clusterer that assigns new rows (`predict`), or
  an anomaly detector with `decision_function`; clusterings and detectors fit on the features
  alone.

The pipeline takes a DataFrame holding the feature columns, in the dtypes that validation
produces (float64; Int64 or int64; boolean; object strings with None or NaN) or plain numpy
ones; `feature_frame` gives the canonical form that fitting uses.

A model given as `function` is the user's: `function(X, y, params)` gets the raw feature frame
and the target Series (None for clustering and anomaly: an anomaly label only scores the
holdout), and returns a fitted object with `predict`.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import pkgutil
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

from refit.errors import SpecError, TrainingError
from refit.spec import DataSpec, FeatureType, ModelSpec, Task
from refit.train._extras import EXTRAS, missing_extra, stand_in
from refit.train._printing import printing_to_stderr
from refit.train.kinds import check_kind, estimator_params
from refit.values import MISSING_CATEGORY, category_text

#: Estimators from modules whose name holds one of these are not given standardised input:
#: trees split on order, which scaling does not change, and naive Bayes models may need
#: non-negative counts.
UNSCALED_MODULES = ("ensemble", "tree", "naive_bayes", "xgboost", "lightgbm", "catboost")


# --- resolving the user's model ---------------------------------------------------------------


def resolve_estimator(path: str, params: Mapping[str, Any], task: Task | None = None) -> Any:
    """Import `module.Class` and build it with `params`; check it fits the task.

    Keys with `__` set nested parameters (`estimator__C`), as in `set_params`.
    """
    module_name, _, class_name = path.rpartition(".")
    module = _import(module_name, "model.estimator", path)
    cls = getattr(module, class_name, None)
    if cls is None:
        classes = [n for n in dir(module) if not n.startswith("_") and _is_class(module, n)]
        raise SpecError(
            f"model.estimator: got {path!r}: module {module_name} has no attribute {class_name}"
            + _did_you_mean(class_name, classes)
        )
    if not isinstance(cls, type):
        raise SpecError(f"model.estimator: got {path!r}: expected a class, got {_describe(cls)}")
    cls = stand_in(cls)

    top = {k: v for k, v in params.items() if "__" not in k}
    nested = {k: v for k, v in params.items() if "__" in k}
    _check_names(class_name, top, _init_names(cls))
    try:
        estimator = cls(**top)
    except Exception as exc:
        raise SpecError(f"model.params: {class_name}(...) refused them: {_error(exc)}") from exc
    if task is not None:
        check_kind(path, estimator, task)
    if not _has_methods(estimator, "fit", "predict"):
        raise SpecError(
            f"model.estimator: got {path!r}: expected an estimator with fit and predict methods"
        )
    if nested:
        get_params = getattr(estimator, "get_params", None)
        _check_names(class_name, nested, set(get_params(deep=True)) if get_params else None)
        try:
            estimator.set_params(**nested)
        except Exception as exc:
            raise SpecError(f"model.params: {_error(exc)}") from exc
    validate = getattr(estimator, "_validate_params", None)
    if callable(validate) and hasattr(estimator, "_parameter_constraints"):  # none in XGBoost
        try:
            validate()
        except (TypeError, ValueError) as exc:
            raise SpecError(f"model.params: {exc}") from exc
    return estimator


def resolve_function(path: str, root: Path) -> Callable[..., Any]:
    """Import `module:function`, with the project `root` on the import path."""
    module_name, _, function_name = path.partition(":")
    where = str(root)
    added = where not in sys.path
    if added:
        sys.path.insert(0, where)
    try:
        importlib.invalidate_caches()
        module = _import(module_name, "model.function", path)
    finally:
        if added:
            sys.path.remove(where)
    function: Callable[..., Any] | None = getattr(module, function_name, None)
    if function is None:
        raise SpecError(
            f"model.function: got {path!r}: module {module_name} has no function {function_name}"
        )
    if not callable(function):
        raise SpecError(
            f"model.function: got {path!r}: expected a function, got {_describe(function)}"
        )
    return function


def _import(module_name: str, field: str, path: str) -> Any:
    try:
        return importlib.import_module(module_name)
    except Exception as exc:
        missing = (exc.name or "") if isinstance(exc, ModuleNotFoundError) else ""
        if missing and (missing == module_name or module_name.startswith(missing + ".")):
            if missing in EXTRAS:
                raise missing_extra(field, path, missing) from exc
            hint = _did_you_mean(missing, _sibling_modules(missing))
            raise SpecError(f"{field}: got {path!r}: no module named {missing}{hint}") from exc
        problem = f"importing {module_name} failed: {_error(exc)}"
        raise SpecError(f"{field}: got {path!r}: {problem}") from exc


def _is_class(module: Any, name: str) -> bool:
    try:
        return isinstance(getattr(module, name), type)
    except Exception:  # a lazy attribute that fails to load is no candidate
        return False


def _sibling_modules(missing: str) -> list[str]:
    """The modules beside `missing` (`sklearn.ensembl` -> sklearn's submodules), full names."""
    parent, _, _ = missing.rpartition(".")
    if not parent:
        return sorted({m.name for m in pkgutil.iter_modules()})
    try:
        package = importlib.import_module(parent)
    except Exception:
        return []
    paths = getattr(package, "__path__", None)
    if paths is None:
        return []
    return [f"{parent}.{m.name}" for m in pkgutil.iter_modules(paths) if not m.name.startswith("_")]


def _did_you_mean(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _init_names(cls: type) -> set[str] | None:
    """The parameters `cls(...)` accepts, or None when it takes any keyword."""
    try:
        parameters = inspect.signature(cls).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return {p.name for p in parameters if p.kind is not inspect.Parameter.VAR_POSITIONAL}


def _check_names(class_name: str, given: Mapping[str, Any], known: set[str] | None) -> None:
    if known is None:
        return
    for name in given:
        if name not in known:
            hint = _did_you_mean(name, sorted(known))
            raise SpecError(f"model.params: {class_name} does not accept {name!r}{hint}")


# --- the pipeline -----------------------------------------------------------------------------


def wants_scaling(estimator: Any) -> bool:
    """Whether `estimator` gets standardised numeric input (linear models, SVMs, kNN, MLPs)."""
    module = type(estimator).__module__
    return not any(part in module for part in UNSCALED_MODULES)


def build_pipeline(data: DataSpec, model: ModelSpec) -> Pipeline:
    """The unfitted pipeline for a model given as `estimator`."""
    if model.estimator is None:
        raise SpecError("model.estimator: required to build a pipeline (this model is a function)")
    estimator = resolve_estimator(model.estimator, estimator_params(model), model.task)
    by_type: dict[FeatureType, list[str]] = {t: [] for t in FeatureType}
    for name, feature in data.features.items():
        by_type[feature.type].append(name)

    def nullable(kind: FeatureType) -> bool:
        return any(data.features[name].nullable for name in by_type[kind])

    numeric = by_type[FeatureType.FLOAT] + by_type[FeatureType.INT]
    transformers: list[tuple[str, Any, list[str]]] = []
    if numeric:
        steps: list[tuple[str, Any]] = [
            ("impute", _imputer("median", nullable(FeatureType.FLOAT) or nullable(FeatureType.INT)))
        ]
        if wants_scaling(estimator):
            steps.append(("scale", StandardScaler()))
        transformers.append(("numeric", Pipeline(steps), numeric))
    if bools := by_type[FeatureType.BOOL]:
        encode = OrdinalEncoder(
            categories=[[False, True]] * len(bools),
            handle_unknown="use_encoded_value",
            unknown_value=np.nan,
            encoded_missing_value=np.nan,
        )
        impute = _imputer("most_frequent", nullable(FeatureType.BOOL))
        transformers.append(("bool", Pipeline([("encode", encode), ("impute", impute)]), bools))
    if categories := by_type[FeatureType.CATEGORY]:
        steps = [
            # NaN first: an imputer for None cannot take an array holding NaN.
            ("impute_nan", _imputer("constant", False, fill_value=MISSING_CATEGORY)),
            (
                "impute_none",
                _imputer("constant", False, fill_value=MISSING_CATEGORY, missing_values=None),
            ),
            ("encode", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
        ]
        transformers.append(("category", Pipeline(steps), categories))
    features = ColumnTransformer(transformers, remainder="drop", sparse_threshold=0.0)
    return Pipeline([("features", features), ("estimator", estimator)])


def _imputer(strategy: str, indicator: bool, **kwargs: Any) -> SimpleImputer:
    # keep_empty_features: a column with no value in this snapshot keeps its place.
    return SimpleImputer(
        strategy=strategy, add_indicator=indicator, keep_empty_features=True, **kwargs
    )


# --- frames -----------------------------------------------------------------------------------


def feature_frame(frame: pd.DataFrame, data: DataSpec) -> pd.DataFrame:
    """The feature columns in spec order: numbers and bools as float64 with NaN for missing,
    categories as object strings with NaN for missing (None and pandas NA included)."""
    _require_columns(frame, list(data.features))
    columns: dict[str, pd.Series[Any]] = {}
    for name, feature in data.features.items():
        column = frame[name]
        missing = column.isna().to_numpy()
        if feature.type is FeatureType.CATEGORY:
            values = [
                np.nan if m else category_text(v) for v, m in zip(column, missing, strict=True)
            ]
            columns[name] = pd.Series(values, index=frame.index, dtype=object)
            continue
        try:
            numbers = column.to_numpy(dtype=np.float64, na_value=np.nan)
        except (TypeError, ValueError) as exc:
            raise TrainingError(
                f"feature {name!r} ({feature.type.value}) holds a value that is not a number: {exc}"
            ) from exc
        columns[name] = pd.Series(numbers, index=frame.index, dtype=np.float64)
    return pd.DataFrame(columns, index=frame.index)


def target_array(frame: pd.DataFrame, data: DataSpec) -> np.ndarray[Any, Any]:
    """The target column as a numpy array (bool, int64, float64 or object)."""
    if data.target is None:
        raise TrainingError("data.target is not set: this task learns no target")
    _require_columns(frame, [data.target])
    return as_target(frame[data.target])


def target_or_none(frame: pd.DataFrame, data: DataSpec) -> np.ndarray[Any, Any] | None:
    """`target_array`, or None without `data.target` (a clustering, an unlabelled anomaly task)."""
    return None if data.target is None else target_array(frame, data)


def as_target(y: pd.Series[Any] | np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """A target as a plain numpy array; pandas nullable dtypes become numpy ones."""
    if isinstance(y, np.ndarray):
        return y
    missing = int(y.isna().sum())
    if missing:
        raise TrainingError(
            f"the target {y.name!r} has {missing} missing value(s); every row needs a target"
        )
    if pd.api.types.is_bool_dtype(y.dtype):
        return y.to_numpy(dtype=bool)
    if pd.api.types.is_integer_dtype(y.dtype):
        return y.to_numpy(dtype=np.int64)
    if pd.api.types.is_float_dtype(y.dtype):
        return y.to_numpy(dtype=np.float64)
    return y.to_numpy(dtype=object)


def _require_columns(frame: pd.DataFrame, names: list[str]) -> None:
    absent = [name for name in names if name not in frame.columns]
    if absent:
        raise TrainingError(
            f"the snapshot has no column {', '.join(map(repr, absent))} "
            f"(its columns: {', '.join(map(str, frame.columns))})"
        )


# --- fitting ----------------------------------------------------------------------------------


@printing_to_stderr
def fit_model(frame: pd.DataFrame, data: DataSpec, model: ModelSpec, root: Path) -> Any:
    """Fit the spec's model on `frame` (features and target); returns the fitted model."""
    if model.function is not None:
        return _fit_function(frame, data, model, model.function, root)
    pipeline = build_pipeline(data, model)
    X = feature_frame(frame, data)
    try:
        if model.supervised:
            pipeline.fit(X, target_array(frame, data))
        else:  # an anomaly label only scores the holdout: nothing learns it
            pipeline.fit(X)
    except Exception as exc:
        name = type(pipeline.steps[-1][1]).__name__
        raise TrainingError(f"fitting {name} failed: {_error(exc)}") from exc
    return pipeline


def _fit_function(
    frame: pd.DataFrame, data: DataSpec, model: ModelSpec, path: str, root: Path
) -> Any:
    function = resolve_function(path, root)
    labelled = [data.target] if model.supervised and data.target is not None else []
    _require_columns(frame, [*data.features, *labelled])
    X = frame[list(data.features)].copy()
    y = frame[labelled[0]].copy() if labelled else None
    try:
        fitted = function(X, y, dict(model.params))
    except Exception as exc:
        raise TrainingError(f"model.function {path} raised {_error(exc)}") from exc
    if not _has_methods(fitted, "predict"):
        raise TrainingError(
            f"model.function {path} returned {_describe(fitted)}; "
            "expected a fitted model with a predict method"
        )
    return fitted


def _has_methods(value: Any, *names: str) -> bool:
    return all(callable(getattr(value, name, None)) for name in names)


def _error(exc: BaseException) -> str:
    message = str(exc).strip()
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _describe(value: Any) -> str:
    kind = type(value)
    return "None" if value is None else f"an object of type {kind.__module__}.{kind.__qualname__}"
