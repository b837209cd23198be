"""ONNX models: scikit-learn pipelines converted for ONNX Runtime, and users' own.

`convert` turns a fitted pipeline into ONNX bytes (skl2onnx), which answer a row ~100x faster
than scikit-learn. Such a model is served through ONNX only when its conversion passed a parity
check on the holdout (see `refit.train.onnx_export`): identical labels, probabilities within a
tight tolerance. Conversion covers float, int, bool and category features, missing values and
unseen categories included (with `refit.flavors._skl2onnx`'s fixes to skl2onnx's converters).
A graph of numbers only takes them as one `[N, F]` matrix; with categories, one input per
feature (graphs converted before the matrix, one input per feature, still load and answer).

`OnnxModel` runs either kind; `onnx_estimator` gives a user's ONNX model (the `onnx` flavor,
`refit models register`) the scikit-learn face refit scores and gates models through.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from refit.errors import ArtifactError, InputError, Problem, RefitError
from refit.flavors._onnx_matrix import MATRIX_INPUT, take_matrix
from refit.flavors._onnx_names import input_names, rename_inputs
from refit.flavors._onnx_outputs import answer
from refit.flavors._onnx_predictor import OnnxPredictor
from refit.flavors._skl2onnx import fixed_converters
from refit.predictions import Fetch, Ready
from refit.signature import Signature
from refit.spec import ArtifactFormat, Task
from refit.values import MISSING_CATEGORY, category_text

if TYPE_CHECKING:
    from refit.registry.tables import ModelVersionRow

RUNTIME = "onnx"
"""The runtime of a version served by ONNX Runtime."""
__all__ = ["RUNTIME", "OnnxModel", "OnnxPredictor", "convert", "load", "onnx_estimator", "serve"]


class UnsupportedModelError(Exception):
    """The model cannot be converted to ONNX (refit serves it natively)."""


def is_text(dtype: Any) -> bool:
    """Whether a column of this dtype holds categories (strings), fed to ONNX as text."""
    return not pd.api.types.is_bool_dtype(dtype) and (
        pd.api.types.is_object_dtype(dtype) or pd.api.types.is_string_dtype(dtype)
    )


def convert(model: Any, sample: pd.DataFrame) -> bytes:
    """The ONNX bytes of a fitted pipeline that takes the columns of `sample`.

    When every column is a number (float, int or bool), the graph has one float `[N, F]`
    input, `MATRIX_INPUT` ("features"), its columns in the order of `sample`'s (NaN: missing),
    which ONNX Runtime answers 2-4x sooner than one input per feature (see
    `refit.flavors._onnx_matrix`). With a category among them, one input per feature (named
    `input_names(features)`), float for numbers and bools, text for categories."""
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType
    from sklearn.base import is_classifier

    texts = [c for c in sample.columns if is_text(sample[c].dtype)]
    # Probabilities as one [rows, classes] tensor rather than a list of maps.
    options = {"zipmap": False} if is_classifier(model) else None
    # refit's pipelines select columns by name: one input per feature, named like it while
    # converting (skl2onnx finds a column by that name), then renamed to a valid ONNX name,
    # and, for numbers only, fed from one matrix. A model that takes numeric features as one
    # matrix (a bare estimator, a user's pipeline) gets that matrix as it is.
    layouts: list[list[tuple[str, Any]]] = [
        [
            (str(c), StringTensorType([None, 1]) if c in texts else FloatTensorType([None, 1]))
            for c in sample.columns
        ]
    ]
    if not texts:
        layouts.append([(MATRIX_INPUT, FloatTensorType([None, len(sample.columns)]))])
    errors = []
    for per_feature, layout in zip((True, False), layouts, strict=False):
        try:
            with fixed_converters():
                onx = to_onnx(
                    model, initial_types=layout, options=options, target_opset=_opsets(model)
                )
            if per_feature:
                rename_inputs(onx, input_names([name for name, _ in layout]))
                if not texts:
                    take_matrix(onx)
            return bytes(onx.SerializeToString())
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
    raise UnsupportedModelError(errors[0])


def _opsets(model: Any) -> dict[str, int] | None:
    """The opsets to convert `model` to (None: the newest skl2onnx knows). skl2onnx 1.20's
    IsolationForest converter refuses the newest `ai.onnx.ml` (4) and converts to 3."""
    from skl2onnx import get_latest_tested_opset_version
    from sklearn.ensemble import IsolationForest

    final = model.steps[-1][1] if hasattr(model, "steps") else model
    if isinstance(final, IsolationForest):
        return {"": get_latest_tested_opset_version(), "ai.onnx.ml": 3}
    return None


_INPUT_TYPES: dict[str, Any] = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(string)": np.object_,
}
_FLOATS = ("tensor(float)", "tensor(double)")


class OnnxModel:
    """An ONNX Runtime session fed a model's features, answering labels (or values) and class
    probabilities.

    The features go in as one input per feature, named like it or like its valid ONNX name
    (`input_names`, as `convert` names them: skl2onnx's layout for pipelines that select
    columns by name), or as one `[N, F]` matrix in signature order;
    inputs may take float, double, int64 or int32, and a feature's own input text (a
    category; a missing one is fed as `MISSING_CATEGORY`). The answer is read from the outputs as:

    - one output: the values (regression), the labels, or, for a classifier whose output is a
      float `[N, classes]` tensor, the probabilities (the label is the most probable class);
    - two outputs: the labels, then the probabilities, as a `[N, classes]` tensor or as a list
      of `{class: probability}` maps (skl2onnx's ZipMap).

    `classes` (a classifier's, in the order of its probability columns) is needed for the last
    two cases; None means a regressor.
    """

    def __init__(
        self, data: bytes, columns: Sequence[str], classes: Sequence[Any] | None = None
    ) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        # One thread per worker process: workers are the unit of parallelism here.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise ArtifactError(f"ONNX Runtime cannot load the model: {exc}") from exc
        self.columns = list(columns)
        self.classes = None if classes is None else list(classes)
        self.bool_labels = self.classes is not None and all(
            isinstance(c, (bool, np.bool_)) for c in self.classes
        )
        self._feeds = self._read_inputs()
        outputs = self.session.get_outputs()
        if not 1 <= len(outputs) <= 2:
            raise ArtifactError(
                f"the ONNX model has {len(outputs)} outputs; refit reads one (values, labels "
                "or class probabilities) or two (labels, then class probabilities)"
            )
        self.outputs = [o.name for o in outputs]
        first = outputs[0]
        self.proba_only = (
            self.classes is not None
            and len(outputs) == 1
            and first.type in _FLOATS
            and len(first.shape) == 2
            and first.shape[1] != 1
        )
        # Where a [N, F] float32 matrix can be fed as it is, with no copy per input.
        self.float32 = all(dtype is np.float32 for _, _, dtype, _ in self._feeds)
        # Where the inputs are built column by column (`run_columns`), not from one matrix.
        self.texts = any(dtype is np.object_ for _, _, dtype, _ in self._feeds)

    def _read_inputs(self) -> list[tuple[str, int | None, Any, int]]:
        """(input name, feature index or None for the whole matrix, dtype, rank) per input."""
        inputs = self.session.get_inputs()
        for i in inputs:
            if i.type not in _INPUT_TYPES:
                raise ArtifactError(
                    f"the ONNX model's input {i.name!r} takes {i.type}; refit feeds features "
                    "as float, double, int64, int32 or (a category's own input) string tensors"
                )
        names = [i.name for i in inputs]
        fixed = [i for i in inputs if i.shape and isinstance(i.shape[0], int)]
        if fixed:
            raise ArtifactError(
                f"the ONNX model's input {fixed[0].name!r} takes exactly {fixed[0].shape[0]} "
                "row(s) at a time; refit sends batches of any size: export it with a dynamic "
                "first dimension (e.g. torch.onnx.export(..., dynamic_axes={...: {0: 'rows'}}))"
            )
        by_name = {i.name: i for i in inputs}
        # A feature's input is named like it, or like its ONNX name (distinct from every
        # feature's own name), so each input is chosen at most once.
        chosen = [
            c if c in by_name else o
            for c, o in zip(self.columns, input_names(self.columns), strict=True)
        ]
        if len(inputs) == len(chosen) and set(chosen) == set(by_name):
            return [
                (name, j, _INPUT_TYPES[by_name[name].type], len(by_name[name].shape))
                for j, name in enumerate(chosen)
            ]
        if len(inputs) == 1 and inputs[0].type == "tensor(string)":
            raise ArtifactError(
                f"the ONNX model's input {names[0]!r} takes text for all the features; refit "
                "feeds text to a category's own input only (one input per feature)"
            )
        if len(inputs) == 1 and len(inputs[0].shape) == 2:
            width = inputs[0].shape[1]
            if isinstance(width, int) and width != len(self.columns):
                raise ArtifactError(
                    f"the ONNX model's input {names[0]!r} takes {width} columns, but the "
                    f"model has {len(self.columns)} features"
                )
            return [(names[0], None, _INPUT_TYPES[inputs[0].type], 2)]
        raise ArtifactError(
            f"the ONNX model's {len(names)} inputs are neither one per feature, named like it "
            f"or like its ONNX name, nor one [N, {len(self.columns)}] matrix: "
            + _unmatched(names, self.columns)
        )

    def run(self, matrix: np.ndarray[Any, Any]) -> tuple[np.ndarray[Any, Any], Any]:
        """Labels (or values) and class probabilities (None for regressors) of `matrix`,
        a float array of shape [rows, features] in `columns` order (NaN: missing)."""
        return self.read(self.results(matrix))

    def results(self, matrix: np.ndarray[Any, Any]) -> list[Any]:
        """The graph's outputs for `matrix` (as `run` takes it), as ONNX Runtime gives them."""
        feeds = {}
        for name, j, dtype, rank in self._feeds:
            part = matrix if j is None else (matrix[:, j : j + 1] if rank == 2 else matrix[:, j])
            if part.dtype != dtype:
                if not np.issubdtype(dtype, np.floating) and np.isnan(part).any():
                    column = "a feature" if j is None else repr(self.columns[j])
                    raise InputError(
                        [Problem(column, "is missing, and the model takes it as an integer")]
                    )
                part = part.astype(dtype)
            feeds[name] = part
        results: list[Any] = self.session.run(None, feeds)
        return results

    def run_columns(self, columns: Sequence[Sequence[Any]]) -> tuple[np.ndarray[Any, Any], Any]:
        """As `run`, from one list of values per feature in `columns` order (None: missing;
        categories as text), each fed to its own input: the way to feed categories."""
        return self.read(self.column_results(columns))

    def column_results(self, columns: Sequence[Sequence[Any]]) -> list[Any]:
        """The graph's outputs for `columns` (as `run_columns` takes them)."""
        feeds = {}
        for name, j, dtype, rank in self._feeds:
            if j is None:
                feeds[name] = np.array(columns, dtype=dtype).T
                continue
            values = columns[j]
            if dtype is np.object_:
                part = np.array(
                    [MISSING_CATEGORY if v is None else category_text(v) for v in values], dtype
                )
            elif np.issubdtype(dtype, np.floating):
                part = np.array(values, dtype=dtype)  # None becomes NaN, a bool 0 or 1
            else:
                if any(v is None for v in values):
                    raise InputError(
                        [
                            Problem(
                                repr(self.columns[j]),
                                "is missing, and the model takes it as an integer",
                            )
                        ]
                    )
                part = np.array(values, dtype=dtype)
            feeds[name] = part.reshape(-1, 1) if rank == 2 else part
        results: list[Any] = self.session.run(None, feeds)
        return results

    def read(self, results: list[Any]) -> tuple[np.ndarray[Any, Any], Any]:
        """Labels (or values) and class probabilities of a classifier's or regressor's
        `results` (see `refit.flavors._onnx_outputs`)."""
        return answer(results, self.classes, self.proba_only, self.bool_labels)

    def run_frame(self, frame: pd.DataFrame) -> tuple[np.ndarray[Any, Any], Any]:
        return self.read(self.frame_results(frame))

    def frame_results(self, frame: pd.DataFrame) -> list[Any]:
        """The graph's outputs for the rows of `frame` (its `columns`, as served)."""
        if self.texts:
            columns = [
                [None if pd.isna(v) else v for v in frame[name].tolist()] for name in self.columns
            ]
            return self.column_results(columns)
        dtype = np.float32 if self.float32 else np.float64
        matrix = frame[self.columns].astype(dtype).to_numpy(na_value=np.nan)
        return self.results(np.ascontiguousarray(matrix, dtype=dtype))


def _unmatched(names: Sequence[str], columns: Sequence[str]) -> str:
    """Which features have no input of their name, and which inputs are no feature."""
    onnx_names = input_names(columns)
    known = {*columns, *onnx_names}
    absent = [
        repr(c) if c == o else f"{c!r} (or {o!r})"
        for c, o in zip(columns, onnx_names, strict=True)
        if {c, o}.isdisjoint(names)
    ]
    strange = [n for n in names if n not in known]
    parts = [f"no input for the features {', '.join(absent)}"] if absent else []
    parts += [f"inputs that are no feature: {', '.join(map(repr, strange))}"] if strange else []
    return "; ".join(parts) or "a feature has two inputs (its name and its ONNX name)"


class OnnxEstimator:
    """A user's ONNX model with a scikit-learn face (`predict`, and `classes_` for a
    classifier), so that refit scores, gates and describes it like any other model."""

    def __init__(self, onnx: OnnxModel, data: bytes) -> None:
        self.onnx = onnx
        self.data = data
        if onnx.classes is not None:
            self.classes_ = np.asarray(onnx.classes)

    def predict(self, X: pd.DataFrame) -> np.ndarray[Any, Any]:
        return np.asarray(self.onnx.run_frame(X)[0])


class OnnxProbabilisticClassifier(OnnxEstimator):
    """An ONNX classifier whose graph gives class probabilities."""

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray[Any, Any]:
        proba = np.asarray(self.onnx.run_frame(X)[1], dtype=np.float64)
        # float32 rows sum to 1 within ~1e-7; metrics such as log_loss want them exact. A row
        # that is no probabilities (NaN, or all zero) stays NaN rather than passing for some.
        total = proba.sum(axis=1, keepdims=True)
        exact: np.ndarray[Any, Any] = np.divide(
            proba, total, out=np.full_like(proba, np.nan), where=total > 0
        )
        return exact


def onnx_estimator(
    data: bytes, features: Sequence[str], classes: Sequence[Any] | None = None
) -> OnnxEstimator:
    """The ONNX model in `data`, fed `features`; a classifier when `classes` is given."""
    onnx = OnnxModel(data, features, classes)
    if onnx.classes is not None and (onnx.proba_only or len(onnx.outputs) == 2):
        return OnnxProbabilisticClassifier(onnx, data)
    return OnnxEstimator(onnx, data)


def load(data: bytes, fmt: ArtifactFormat, signature: Signature | None = None) -> OnnxEstimator:
    """The ONNX model in `data`, fed the features of `signature` (which it needs)."""
    if signature is None:
        raise ArtifactError("an ONNX model is loaded with the signature it was registered with")
    return onnx_estimator(data, signature.names, signature.output.classes)


def serve(
    row: ModelVersionRow, signature: Signature, fetch: Fetch, trusted_types: Collection[str]
) -> Ready:
    """The predictor of a user's own ONNX model: ONNX Runtime on the file as registered."""
    data = fetch(row.artifact_uri, row.artifact_sha256)
    classes = signature.output.classes if signature.output.task is Task.CLASSIFICATION else None
    try:
        model = OnnxModel(data, signature.names, classes)
    except RefitError as exc:
        raise ArtifactError(f"{row.name} v{row.version} cannot be loaded: {exc}") from exc
    return Ready(OnnxPredictor(model, signature), RUNTIME)


def artifacts(row: ModelVersionRow) -> list[tuple[str, str, str]]:
    """(what, key, sha256) of the file a server loads: the ONNX model itself."""
    return [("artifact", row.artifact_uri, row.artifact_sha256)]
