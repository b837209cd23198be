"""Converting a newly trained model to ONNX, and checking that it answers as the original does.

The check covers the inputs a server accepts: the holdout, the holdout with about one cell in
seven of the nullable features blanked, and the probe rows of `refit.train.nullability` (one
row per nullable feature, with that feature missing). Classifiers must give identical labels
and probabilities within `PROBABILITY_TOLERANCE`; regressors values within `VALUE_TOLERANCE`
(relative: ONNX computes in float32). An answer of NaN or infinity where the original answers a
number is a difference. A conversion that fails the check is not used; the version is served
natively, and the status says why.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from refit.errors import TrainingError
from refit.flavors.onnx import OnnxModel, convert
from refit.spec import Task
from refit.train.nullability import FIX, blanked, probe_rows

PROBABILITY_TOLERANCE = 1e-5
VALUE_TOLERANCE = 1e-4


@dataclass(frozen=True)
class OnnxExport:
    status: str
    """"ok", or why the version is served natively ("unsupported: ...", "parity failed: ...")."""
    data: bytes | None = None
    checked_rows: int = 0
    max_difference: float | None = None


def with_gaps(frame: pd.DataFrame, nullable: Sequence[str]) -> pd.DataFrame:
    """`frame` with about one cell in seven of the `nullable` columns blanked."""
    gaps = frame.copy()
    for j, column in enumerate(gaps.columns):
        if column in nullable:
            gaps[column] = blanked(gaps[column], [i for i in range(len(gaps)) if (i + j) % 7 == 0])
    return gaps


def export_onnx(
    model: Any, holdout: pd.DataFrame, task: Task, nullable: Sequence[str]
) -> OnnxExport:
    """Convert `model` and check it on `holdout` (the feature columns, as served), whose
    columns `nullable` a server takes missing."""
    try:
        data = convert(model, holdout)
        classes = getattr(model, "classes_", None) if task is Task.CLASSIFICATION else None
        known = None if classes is None else np.asarray(classes).tolist()
        onnx = OnnxModel(data, list(holdout.columns), known)
    except Exception as exc:  # any failure to convert or load means: serve natively
        return OnnxExport(f"unsupported: {exc}")
    nullable = [c for c in holdout.columns if c in nullable]
    checks = [(holdout, "holdout rows")]
    probes = probe_rows(holdout, nullable) if nullable else None
    if probes is not None:
        checks.append((with_gaps(holdout, nullable), "holdout rows with cells blanked"))
        checks.append((probes, "rows with one nullable feature missing"))
    worst = 0.0
    for frame, what in checks:
        try:
            expected = np.asarray(model.predict(frame))
            native = _proba(model, frame) if task is Task.CLASSIFICATION else None
        except Exception as exc:
            if frame is holdout:
                raise
            raise TrainingError(
                f"the model fails on {what} (nullable: {', '.join(map(repr, nullable))}): "
                f"{type(exc).__name__}: {exc}; {FIX}"
            ) from exc
        try:
            labels, proba = onnx.run_frame(frame)
        except Exception as exc:  # a graph that loads but cannot run: serve natively
            return OnnxExport(f"unsupported: ONNX Runtime failed on the {what}: {exc}")
        names = nullable if frame is probes else None
        problem, diff = _difference(task, expected, native, labels, proba, what, names)
        if problem is not None:
            return OnnxExport(f"parity failed: {problem}")
        worst = max(worst, diff)
    return OnnxExport("ok", data, sum(len(frame) for frame, _ in checks), worst)


def _proba(model: Any, frame: pd.DataFrame) -> np.ndarray[Any, Any] | None:
    if not hasattr(model, "predict_proba"):
        return None
    return np.asarray(model.predict_proba(frame), dtype=float)


def _difference(
    task: Task,
    expected: np.ndarray[Any, Any],
    native: Any,
    labels: Any,
    proba: Any,
    what: str,
    names: Sequence[str] | None,
) -> tuple[str | None, float]:
    """What differs on the rows `what` (None: nothing), and the largest difference; `names`
    are the features missing in each row of the probe rows."""
    rows = len(expected)
    if task is Task.CLASSIFICATION:
        wrong = sum(str(a) != str(b) for a, b in zip(labels, expected, strict=True))
        if wrong:
            return f"labels differ on {wrong} of {rows} {what}", 0.0
        if proba is None or native is None:
            return None, 0.0
        got, want = np.asarray(proba, dtype=float), native
        limit, kind, scale = PROBABILITY_TOLERANCE, "probabilities", 1.0
    else:
        got, want = np.asarray(labels, dtype=float), expected.astype(float)
        limit, kind, scale = VALUE_TOLERANCE, "values", np.maximum(np.abs(want), 1.0)
    diff = (np.abs(got - want) / scale).reshape(rows, -1)
    unanswered = ~np.isfinite(got.reshape(rows, -1)).all(axis=1)
    if unanswered.any():
        text = f"ONNX answers NaN or infinity on {int(unanswered.sum())} of {rows} {what}"
        if names is not None:
            text += f" ({', '.join(repr(names[int(i)]) for i in np.flatnonzero(unanswered))})"
        return text, 0.0
    worst = float(diff.max()) if diff.size else 0.0
    if not worst <= limit:  # NaN (the model's own answer missing) compares false: a difference
        relative = " relative" if task is Task.REGRESSION else ""
        return f"{kind} differ by up to {worst:.2g}{relative} (tolerance {limit:g}) on {what}", 0.0
    return None, worst
