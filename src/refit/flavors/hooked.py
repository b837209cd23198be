"""The project's hooks around a model: `model.features` before it, `model.postprocess` after.

    frame = checked_features(features, "hooks:features", raw)       # what the model takes
    predictions = postprocessed(post, "hooks:post", names, columns, predictions, output)

Both run the same way at training (on the holdout, and on the champion with the champion's
own code) and in a server (`with_hooks` wraps a version's predictor in a `HookedPredictor`),
so what training measured is what a client gets. What either does wrong is a `CodeError`
naming the function: a training run fails with it, and a server fails the one request whose
rows it ran on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from refit.code import LoadedCode, load_code
from refit.errors import ArtifactError, CodeError
from refit.predictions import Columns, Fetch, Predictions, Predictor, Ready, frame_of
from refit.signature import Output, Signature
from refit.spec import FeatureType

if TYPE_CHECKING:
    from refit.registry.tables import ModelVersionRow

Features = Callable[[pd.DataFrame], Any]
Postprocess = Callable[[dict[str, Any], dict[str, Any]], Any]

#: The methods of a model that take the input rows, which a features hook comes before.
TAKES_ROWS = frozenset(
    {"predict", "predict_proba", "predict_log_proba", "decision_function", "score_samples"}
    | {"transform"}
)


# --- model.features ---------------------------------------------------------------------------


def checked_features(
    function: Features,
    path: str,
    frame: pd.DataFrame,
    columns: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """`function(frame)`, checked: a DataFrame with the same rows and index, whose columns
    are numbers, bools or text (categories); with `columns` (name -> `FeatureType` value, what
    the version was trained on), those (an int may come back as a float).
    Text columns come back as object strings."""
    where = f"model.features {path}"
    try:
        out = function(frame.copy())
    except Exception as exc:
        raise CodeError(f"{where} raised {_error(exc)}") from exc
    if not isinstance(out, pd.DataFrame):
        raise CodeError(f"{where} returned {_describe(out)}; expected a pandas DataFrame")
    if len(out) != len(frame):
        raise CodeError(
            f"{where} returned {len(out)} rows for {len(frame)}: it must keep every row, in "
            "order (add or change columns; a row to leave out is postprocess's to withhold)"
        )
    if not out.index.equals(frame.index):
        raise CodeError(
            f"{where} changed the frame's index: keep it (assign columns, do not reorder, "
            "filter or reset the rows)"
        )
    kinds = frame_kinds(out, where)
    if columns is not None and _kinds_of(kinds) != _kinds_of(columns):
        raise CodeError(
            f"{where} returned the columns {_listing(kinds)}, but this version was trained "
            f"on {_listing(columns)}"
        )
    text = [name for name, kind in kinds.items() if kind == FeatureType.CATEGORY.value]
    if text:
        out = out.copy()
        for name in text:
            column = out[name]
            out[name] = pd.Series(
                np.where(column.isna().to_numpy(), np.nan, column.astype(object).to_numpy()),
                index=out.index,
                dtype=object,
            )
    return out


def frame_kinds(frame: pd.DataFrame, where: str) -> dict[str, str]:
    """Each column's `FeatureType` value; a `CodeError` names a column of no usable type."""
    kinds: dict[str, str] = {}
    for name in frame.columns:
        if not isinstance(name, str) or name in kinds:
            raise CodeError(f"{where} returned a column named {name!r}: names must be unique text")
        column = frame[name]
        dtype = column.dtype
        if pd.api.types.is_bool_dtype(dtype):
            kinds[name] = FeatureType.BOOL.value
        elif pd.api.types.is_integer_dtype(dtype):
            kinds[name] = FeatureType.INT.value
        elif pd.api.types.is_float_dtype(dtype):
            kinds[name] = FeatureType.FLOAT.value
        elif isinstance(dtype, pd.CategoricalDtype) or pd.api.types.is_string_dtype(dtype):
            if not all(isinstance(v, str) for v in column.dropna()):
                raise CodeError(
                    f"{where} returned column {name!r} holding values that are not text; "
                    "give numbers a numeric dtype, or text as str"
                )
            kinds[name] = FeatureType.CATEGORY.value
        else:
            raise CodeError(
                f"{where} returned column {name!r} of dtype {dtype}; expected numbers, bools "
                "or text (categories)"
            )
    if not kinds:
        raise CodeError(f"{where} returned no column")
    return kinds


class HookedModel:
    """A fitted model behind the features hook it was trained with, with the face of the
    model (`predict`, `predict_proba`, `classes_`, ...) on the raw input rows."""

    def __init__(
        self, model: Any, function: Features, path: str, columns: Mapping[str, str]
    ) -> None:
        self.model = model
        self.function = function
        self.path = path
        self.columns = dict(columns)

    def inputs(self, X: pd.DataFrame) -> pd.DataFrame:
        """What the model takes for the raw rows `X`."""
        return checked_features(self.function, self.path, X, self.columns)

    def predict(self, X: pd.DataFrame) -> Any:
        return self.model.predict(self.inputs(X))

    def __getattr__(self, name: str) -> Any:
        if name in {"model", "function", "path", "columns"}:
            raise AttributeError(name)
        value = getattr(self.model, name)
        if name in TAKES_ROWS and callable(value):

            def method(X: pd.DataFrame, *args: Any, **kwargs: Any) -> Any:
                return value(self.inputs(X), *args, **kwargs)

            return method
        return value


def unhooked(model: Any) -> Any:
    """The model itself, behind any features hook (what is saved as the version's artifact)."""
    return model.model if isinstance(model, HookedModel) else model


# --- model.postprocess ------------------------------------------------------------------------


def postprocessed(
    function: Postprocess,
    path: str,
    names: list[str],
    columns: Columns,
    predictions: Predictions,
    output: Output,
) -> Predictions:
    """Each row's answer after `function(record, prediction)`: the dict it returns (its
    `prediction`, and `probabilities`, `distances` or `score` when it changes them), or the
    row withheld when it returns None. One call per row, in row order."""
    where = f"model.postprocess {path}"
    rows = len(predictions)
    labels = predictions.labels
    labels = labels.astype(object) if labels.dtype.kind in "USO" else labels.copy()
    proba = None if predictions.probabilities is None else predictions.probabilities.copy()
    scores = None if predictions.scores is None else np.array(predictions.scores, dtype=float)
    withheld = np.zeros(rows, dtype=bool)
    classes = predictions.classes
    label_list = predictions.label_list()
    proba_maps = predictions.probability_maps()
    score_rows = None if scores is None else scores.tolist()
    for i in range(rows):
        record = {name: values[i] for name, values in zip(names, columns, strict=True)}
        prediction: dict[str, Any] = {"prediction": label_list[i]}
        if proba_maps is not None:
            prediction["probabilities"] = proba_maps[i]
        if score_rows is not None:
            row = score_rows[i]
            if isinstance(row, list):
                prediction["distances"] = dict(zip(classes, row, strict=True))
            else:
                prediction["score"] = row
        try:
            answer = function(record, prediction)
        except Exception as exc:
            raise CodeError(f"{where} raised {_error(exc)} on row {i}") from exc
        if answer is None:
            withheld[i] = True
            continue
        if not isinstance(answer, dict) or "prediction" not in answer:
            raise CodeError(
                f"{where} returned {_describe(answer)} for row {i}; expected the prediction "
                "dict (with its 'prediction'), or None to withhold the row's answer"
            )
        labels[i] = _label(answer["prediction"], output, where, i)
        if proba is not None and "probabilities" in answer:
            proba[i] = _by_class(answer["probabilities"], classes, "probabilities", where, i)
        if scores is not None and scores.ndim == 2 and "distances" in answer:
            scores[i] = _by_class(answer["distances"], classes, "distances", where, i)
        if scores is not None and scores.ndim == 1 and "score" in answer:
            scores[i] = _number(answer["score"], "score", where, i)
    return Predictions(labels, proba, classes, scores, withheld)


def _label(value: Any, output: Output, where: str, row: int) -> Any:
    value = value.item() if isinstance(value, np.generic) else value
    kind = output.type
    fits = {
        "bool": isinstance(value, bool),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, (int, float)) and not isinstance(value, bool),
        "string": isinstance(value, str),
    }.get(kind, False)
    classes = output.classes
    if fits and (classes is None or value in classes):
        return float(value) if kind == "float" else value
    among = "" if classes is None else f" (one of {', '.join(map(repr, classes[:10]))})"
    raise CodeError(
        f"{where} answered {value!r} for row {row}, but this model's predictions are of type "
        f"{kind}{among}: postprocess may change a prediction to another of those, or return "
        "None to withhold the row, not change its type"
    )


def _by_class(value: Any, classes: tuple[str, ...], what: str, where: str, row: int) -> list[float]:
    if not isinstance(value, dict) or set(map(str, value)) != set(classes):
        raise CodeError(
            f"{where} returned {what} for row {row} that are not one number per class "
            f"({', '.join(classes)})"
        )
    given = {str(k): v for k, v in value.items()}
    return [_number(given[c], what, where, row) for c in classes]


def _number(value: Any, what: str, where: str, row: int) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        raise CodeError(f"{where} returned {what} for row {row} that are not numbers")
    number = float(value)
    if not np.isfinite(number):
        raise CodeError(f"{where} returned {what} for row {row} that are not finite")
    return number


# --- a served version -------------------------------------------------------------------------


class HookedPredictor:
    """A version's predictor with its hooks: the features hook between the checked input
    columns and the model (whose predictor then takes the frame: `predict_frame`), and the
    postprocess hook on each row's answer. The user's code takes its time: never `quick`."""

    quick = False

    def __init__(
        self,
        inner: Predictor,
        signature: Signature,
        features: tuple[Features, str, Mapping[str, str]] | None,
        postprocess: tuple[Postprocess, str] | None,
    ) -> None:
        self.inner = inner
        self.signature = signature
        self.features = features
        self.postprocess = postprocess

    @property
    def withholds(self) -> bool:
        """Whether an answer may withhold rows: the version has a postprocess hook."""
        return self.postprocess is not None

    def predict(self, columns: Columns) -> Predictions:
        if self.features is None:
            predictions = self.inner.predict(columns)
        else:
            features, path, kinds = self.features
            frame = checked_features(
                features, path, frame_of(self.signature.inputs, columns), kinds
            )
            predictions = self.inner.predict_frame(frame)  # type: ignore[attr-defined]
        if self.postprocess is None:
            return predictions
        postprocess, path = self.postprocess
        names = self.signature.names
        return postprocessed(postprocess, path, names, columns, predictions, self.signature.output)


def with_hooks(ready: Ready, row: ModelVersionRow, signature: Signature, fetch: Fetch) -> Ready:
    """`ready` with the version's hooks around its predictor, from the version's own code
    artifact (fetched with its sha256 checked); as it is for a version with no hooks."""
    record = row.code or {}
    if not record.get("features") and not record.get("postprocess"):
        return ready
    where = f"{row.name} v{row.version}"
    code: LoadedCode = getattr(ready.predictor, "code", None) or load_code(record, fetch, where)
    features = None
    if record.get("features"):
        if not hasattr(ready.predictor, "predict_frame"):
            raise ArtifactError(f"{where} has a features hook, but its runtime takes no frame")
        path = str(record["features"])
        features = (code.function(path), path, dict(record.get("columns") or {}))
    postprocess = None
    if record.get("postprocess"):
        path = str(record["postprocess"])
        postprocess = (code.function(path), path)
    predictor = HookedPredictor(ready.predictor, signature, features, postprocess)
    return Ready(predictor, ready.runtime, ready.note, ready.error)


def code_artifacts(row: ModelVersionRow) -> list[tuple[str, str, str]]:
    """(what, key, sha256) of the version's code artifact, if it has one."""
    record = row.code
    if not record or not record.get("uri"):
        return []
    return [("code artifact", str(record["uri"]), str(record["sha256"]))]


def _kinds_of(kinds: Mapping[str, str]) -> dict[str, str]:
    # An int column that holds a missing value at serving comes back as floats: both are
    # numbers to the model's pipeline.
    numbers = (FeatureType.INT.value, FeatureType.FLOAT.value)
    return {name: "number" if kind in numbers else kind for name, kind in kinds.items()}


def _listing(kinds: Mapping[str, str]) -> str:
    return ", ".join(f"{name} ({kind})" for name, kind in kinds.items())


def _error(exc: BaseException) -> str:
    message = str(exc).strip()
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _describe(value: Any) -> str:
    kind = type(value)
    return "None" if value is None else f"an object of type {kind.__module__}.{kind.__qualname__}"
