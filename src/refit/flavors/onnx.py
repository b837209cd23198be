"""ONNX: a scikit-learn pipeline converted for ONNX Runtime, which answers one row ~100x faster.

`convert` turns a fitted pipeline into ONNX bytes (skl2onnx); `OnnxModel` runs them. A model is
served through ONNX only when its conversion passed a parity check on the holdout (see
`refit.train.onnx_export`): identical labels, probabilities within a tight tolerance.
Conversion covers numeric features (float and int, missing values included); other schemas
are served natively.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd

from refit.errors import ArtifactError


class UnsupportedModelError(Exception):
    """The model cannot be converted to ONNX (refit serves it natively)."""


@contextlib.contextmanager
def _integer_missing_flags() -> Iterator[None]:
    """skl2onnx 1.20 passes HistGradientBoosting's `missing_go_to_left` flags as numpy bools,
    which onnx refuses ("Expected an int, got a boolean"); cast them while converting."""
    from skl2onnx.common import tree_ensemble

    original = tree_ensemble.add_node

    def add_node(*args: Any, **kwargs: Any) -> Any:
        if "nodes_missing_value_tracks_true" in kwargs:
            kwargs["nodes_missing_value_tracks_true"] = int(
                kwargs["nodes_missing_value_tracks_true"]
            )
        return original(*args, **kwargs)

    tree_ensemble.add_node = add_node
    try:
        yield
    finally:
        tree_ensemble.add_node = original


def convert(model: Any, sample: pd.DataFrame) -> bytes:
    """The ONNX bytes of a fitted pipeline that takes the numeric columns of `sample`."""
    numeric = [c for c in sample.columns if pd.api.types.is_numeric_dtype(sample[c].dtype)]
    if len(numeric) != len(sample.columns) or any(
        pd.api.types.is_bool_dtype(sample[c].dtype) for c in sample.columns
    ):
        raise UnsupportedModelError("only numeric (float and int) features convert to ONNX")
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.base import is_classifier

    typed = sample.head(1).astype("float32")
    # Probabilities as one [rows, classes] tensor rather than a list of maps.
    options = {"zipmap": False} if is_classifier(model) else None
    # refit's pipelines select columns by name: one input per feature. A model that takes
    # the features as one matrix (a bare estimator, a user's pipeline) gets one [N, F] input.
    layouts: list[Any] = [typed, [("input", FloatTensorType([None, len(sample.columns)]))]]
    errors = []
    for layout in layouts:
        try:
            with _integer_missing_flags():
                if isinstance(layout, pd.DataFrame):
                    onx = to_onnx(model, layout, options=options, target_opset=None)
                else:
                    onx = to_onnx(model, initial_types=layout, options=options, target_opset=None)
            return bytes(onx.SerializeToString())
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
    raise UnsupportedModelError(errors[0][:300])


class OnnxModel:
    """An ONNX Runtime session with one float input per feature, in signature order."""

    def __init__(self, data: bytes, columns: Sequence[str]) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        # One thread per worker process: workers are the unit of parallelism here.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise ArtifactError(f"ONNX Runtime cannot load the model: {exc}") from exc
        names = [i.name for i in self.session.get_inputs()]
        self.matrix_input = names[0] if len(names) == 1 and len(columns) > 1 else None
        if self.matrix_input is None and sorted(names) != sorted(columns):
            raise ArtifactError(f"the ONNX model's inputs {names} are not the features {columns}")
        self.columns = list(columns)
        self.outputs = [o.name for o in self.session.get_outputs()]

    def run(self, matrix: np.ndarray[Any, Any]) -> tuple[np.ndarray[Any, Any], Any]:
        """Labels (or values) and class probabilities (None for regressors) of `matrix`,
        a float32 array of shape [rows, features] in `columns` order (NaN: missing)."""
        if self.matrix_input is not None:
            feeds = {self.matrix_input: matrix}
        else:
            feeds = {name: matrix[:, j : j + 1] for j, name in enumerate(self.columns)}
        results = self.session.run(None, feeds)
        first = np.asarray(results[0])
        if first.ndim == 2 and first.shape[1] == 1:
            first = first[:, 0]
        proba = np.asarray(results[1]) if len(results) > 1 else None
        return first, proba

    def run_frame(self, frame: pd.DataFrame) -> tuple[np.ndarray[Any, Any], Any]:
        matrix = frame[self.columns].astype("float32").to_numpy(na_value=np.nan)
        return self.run(np.ascontiguousarray(matrix, dtype=np.float32))
