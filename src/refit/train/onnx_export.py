"""Converting a newly trained model to ONNX, and checking that it answers as the original does.

The check runs on the holdout, and again on the holdout with some cells blanked out (so missing
values take the same path): classifiers must give identical labels and probabilities within
`PROBABILITY_TOLERANCE`; regressors values within `VALUE_TOLERANCE` (relative: ONNX computes in
float32). A conversion that fails the check is not used; the version is served natively.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from refit.flavors.onnx import OnnxModel, convert
from refit.spec import Task

PROBABILITY_TOLERANCE = 1e-5
VALUE_TOLERANCE = 1e-4


@dataclass(frozen=True)
class OnnxExport:
    status: str
    """"ok", or why the version is served natively ("unsupported: ...", "parity failed: ...")."""
    data: bytes | None = None
    checked_rows: int = 0
    max_difference: float | None = None


def with_gaps(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with about one cell in seven blanked, so the check covers missing values."""
    gaps = frame.copy()
    for j, column in enumerate(gaps.columns):
        rows = [i for i in range(len(gaps)) if (i + j) % 7 == 0]
        gaps.loc[gaps.index[rows], column] = np.nan
    return gaps


def export_onnx(model: Any, holdout: pd.DataFrame, task: Task) -> OnnxExport:
    """Convert `model` and check it on `holdout` (the feature columns, as served)."""
    try:
        data = convert(model, holdout)
        classes = getattr(model, "classes_", None) if task is Task.CLASSIFICATION else None
        known = None if classes is None else np.asarray(classes).tolist()
        onnx = OnnxModel(data, list(holdout.columns), known)
    except Exception as exc:  # any failure to convert or load means: serve natively
        return OnnxExport(f"unsupported: {exc}"[:500])
    worst = 0.0
    frames = [holdout]
    if holdout.isna().to_numpy().sum() == 0 and not any(
        pd.api.types.is_integer_dtype(holdout[c].dtype)
        and not isinstance(holdout[c].dtype, pd.api.extensions.ExtensionDtype)
        for c in holdout.columns
    ):
        frames.append(with_gaps(holdout))
    for frame in frames:
        try:
            expected = np.asarray(model.predict(frame))
        except Exception:
            if frame is holdout:
                raise
            continue  # the model itself refuses missing values: nothing to compare there
        try:
            labels, proba = onnx.run_frame(frame)
        except Exception as exc:  # a graph that loads but cannot run: serve natively
            return OnnxExport(f"unsupported: ONNX Runtime failed on the holdout: {exc}"[:500])
        if task is Task.CLASSIFICATION:
            if [str(v) for v in labels] != [str(v) for v in expected]:
                wrong = sum(str(a) != str(b) for a, b in zip(labels, expected, strict=True))
                return OnnxExport(f"parity failed: {wrong} of {len(frame)} labels differ")
            if proba is not None and hasattr(model, "predict_proba"):
                diff = float(np.abs(proba - np.asarray(model.predict_proba(frame))).max())
                worst = max(worst, diff)
                if diff > PROBABILITY_TOLERANCE:
                    return OnnxExport(
                        f"parity failed: probabilities differ by up to {diff:.2g} "
                        f"(tolerance {PROBABILITY_TOLERANCE:g})"
                    )
        else:
            values = np.asarray(labels, dtype=float)
            scale = np.maximum(np.abs(expected.astype(float)), 1.0)
            diff = float((np.abs(values - expected) / scale).max())
            worst = max(worst, diff)
            if diff > VALUE_TOLERANCE:
                return OnnxExport(
                    f"parity failed: values differ by up to {diff:.2g} relative "
                    f"(tolerance {VALUE_TOLERANCE:g})"
                )
    rows = sum(len(f) for f in frames)
    return OnnxExport("ok", data, rows, worst)
