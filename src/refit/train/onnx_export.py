"""Converting a newly trained model to ONNX, and checking that it answers as the original does.

The check covers the inputs a server accepts: the holdout, the holdout with about one cell in
seven of the nullable features blanked, and the probe rows of `refit.train.nullability` (one
row per nullable feature, with that feature missing). Classifiers must give identical labels
and probabilities within `PROBABILITY_TOLERANCE`; regressors values within `VALUE_TOLERANCE`
(relative: ONNX computes in float32). A clustering must give identical cluster ids, its
distances within `VALUE_TOLERANCE` (relative) and a mixture's probabilities within
`PROBABILITY_TOLERANCE`; an anomaly detector identical flags and its scores within
`VALUE_TOLERANCE` (relative), compared with what native serving answers
(`refit.flavors.sklearn.SklearnPredictor`). An answer of NaN or infinity where the original
answers a number is a difference. A conversion that fails the check is not used; the version
is served natively, and the status says why.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from refit.errors import TrainingError
from refit.flavors._onnx_outputs import unsupervised, unsupervised_answer
from refit.flavors.onnx import OnnxModel, convert
from refit.flavors.sklearn import SklearnPredictor
from refit.predictions import Predictions
from refit.signature import Output, Signature
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
    model: Any,
    holdout: pd.DataFrame,
    task: Task,
    nullable: Sequence[str],
    output: Output | None = None,
) -> OnnxExport:
    """Convert `model` and check it on `holdout` (the feature columns, as served), whose
    columns `nullable` a server takes missing; `output` is the signature's (which a
    clustering's and an anomaly detector's check needs)."""
    if output is not None and unsupervised(output):
        return _export_unsupervised(model, holdout, nullable, output)
    try:
        data = convert(model, holdout)
        classes = getattr(model, "classes_", None) if task is Task.CLASSIFICATION else None
        known = None if classes is None else np.asarray(classes).tolist()
        onnx = OnnxModel(data, list(holdout.columns), known)
    except Exception as exc:  # any failure to convert or load means: serve natively
        return OnnxExport(f"unsupported: {exc}")
    checks, nullable, probes = _checks(holdout, nullable)
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


def _checks(
    holdout: pd.DataFrame, nullable: Sequence[str]
) -> tuple[list[tuple[pd.DataFrame, str]], list[str], pd.DataFrame | None]:
    """The frames to check (and what each is), the nullable columns, and the probe rows."""
    nullable = [c for c in holdout.columns if c in nullable]
    checks = [(holdout, "holdout rows")]
    probes = probe_rows(holdout, nullable) if nullable else None
    if probes is not None:
        checks.append((with_gaps(holdout, nullable), "holdout rows with cells blanked"))
        checks.append((probes, "rows with one nullable feature missing"))
    return checks, nullable, probes


def _export_unsupervised(
    model: Any, holdout: pd.DataFrame, nullable: Sequence[str], output: Output
) -> OnnxExport:
    """`export_onnx` for a clustering or an anomaly detector."""
    try:
        data = convert(model, holdout)
        onnx = OnnxModel(data, list(holdout.columns))
    except Exception as exc:  # any failure to convert or load means: serve natively
        return OnnxExport(f"unsupported: {exc}")
    native = SklearnPredictor(model, Signature([], output))
    checks, nullable, probes = _checks(holdout, nullable)
    worst = 0.0
    for frame, what in checks:
        try:
            expected = native.predict_frame(frame)
        except Exception as exc:
            if frame is holdout:
                raise
            raise TrainingError(
                f"the model fails on {what} (nullable: {', '.join(map(repr, nullable))}): "
                f"{type(exc).__name__}: {exc}; {FIX}"
            ) from exc
        try:
            got = unsupervised_answer(output, onnx.frame_results(frame))
        except Exception as exc:  # a graph that loads but cannot run: serve natively
            return OnnxExport(f"unsupported: ONNX Runtime failed on the {what}: {exc}")
        names = nullable if frame is probes else None
        problem, diff = _unsupervised_difference(output, expected, got, what, names)
        if problem is not None:
            return OnnxExport(f"parity failed: {problem}")
        worst = max(worst, diff)
    return OnnxExport("ok", data, sum(len(frame) for frame, _ in checks), worst)


def _unsupervised_difference(
    output: Output,
    expected: Predictions,
    got: tuple[Any, Any, Any],
    what: str,
    names: Sequence[str] | None,
) -> tuple[str | None, float]:
    """What differs between native serving's answers and ONNX's on the rows `what`."""
    labels, proba, scores = got
    rows = len(expected)
    kind = "flags" if output.task is Task.ANOMALY else "cluster ids"
    wrong = int(np.count_nonzero(np.asarray(labels) != expected.labels))
    if wrong:
        return f"{kind} differ on {wrong} of {rows} {what}", 0.0
    worst = 0.0
    pairs = [
        (proba, expected.probabilities, "probabilities", PROBABILITY_TOLERANCE, False),
        (scores, expected.scores, "scores", VALUE_TOLERANCE, True),
    ]
    for mine, want, name, limit, relative in pairs:
        if want is None:
            continue
        if mine is None:
            return f"ONNX gives no {name}", 0.0
        problem, diff = _compared(np.asarray(mine, float), want, name, limit, relative, what, names)
        if problem is not None:
            return problem, 0.0
        worst = max(worst, diff)
    return None, worst


def _compared(
    got: np.ndarray[Any, Any],
    want: np.ndarray[Any, Any],
    kind: str,
    limit: float,
    relative: bool,
    what: str,
    names: Sequence[str] | None,
) -> tuple[str | None, float]:
    """The difference of `got` from `want` beyond `limit` (None: none), and the largest."""
    rows = len(want)
    unanswered = ~np.isfinite(got.reshape(rows, -1)).all(axis=1)
    if unanswered.any():
        text = f"ONNX answers NaN or infinity on {int(unanswered.sum())} of {rows} {what}"
        if names is not None:
            text += f" ({', '.join(repr(names[int(i)]) for i in np.flatnonzero(unanswered))})"
        return text, 0.0
    scale = np.maximum(np.abs(want), 1.0) if relative else 1.0
    diff = np.abs(got.reshape(want.shape) - want) / scale
    worst = float(diff.max()) if diff.size else 0.0
    if not worst <= limit:
        how = " relative" if relative else ""
        return f"{kind} differ by up to {worst:.2g}{how} (tolerance {limit:g}) on {what}", 0.0
    return None, worst


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
