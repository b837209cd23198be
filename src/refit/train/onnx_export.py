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

from collections.abc import Callable, Sequence
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
    try:
        data = convert(model, holdout)
        if output is not None and unsupervised(output):
            parity = _unsupervised(model, OnnxModel(data, list(holdout.columns)), output)
        else:
            parity = _supervised(model, data, list(holdout.columns), task)
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
            expected = parity.native(frame)
        except Exception as exc:
            if frame is holdout:
                raise
            raise TrainingError(
                f"the model fails on {what} (nullable: {', '.join(map(repr, nullable))}): "
                f"{type(exc).__name__}: {exc}; {FIX}"
            ) from exc
        try:
            got = parity.onnx(frame)
        except Exception as exc:  # a graph that loads but cannot run: serve natively
            return OnnxExport(f"unsupported: ONNX Runtime failed on the {what}: {exc}")
        names = nullable if frame is probes else None
        problem, diff = parity.difference(expected, got, what, names)
        if problem is not None:
            return OnnxExport(f"parity failed: {problem}")
        worst = max(worst, diff)
    return OnnxExport("ok", data, sum(len(frame) for frame, _ in checks), worst)


Difference = tuple[str | None, float]
"""What differs on some rows (None: nothing), and the largest difference."""


@dataclass(frozen=True)
class _Parity:
    """How one kind of model is checked: its native answers on a frame, its graph's, and
    what differs between them (`difference(expected, got, what, names)`)."""

    native: Callable[[pd.DataFrame], Any]
    onnx: Callable[[pd.DataFrame], Any]
    difference: Callable[[Any, Any, str, Sequence[str] | None], Difference]


def _supervised(model: Any, data: bytes, columns: list[str], task: Task) -> _Parity:
    classes = getattr(model, "classes_", None) if task is Task.CLASSIFICATION else None
    known = None if classes is None else np.asarray(classes).tolist()
    onnx = OnnxModel(data, columns, known)

    def native(frame: pd.DataFrame) -> tuple[Any, Any]:
        expected = np.asarray(model.predict(frame))
        return expected, _proba(model, frame) if task is Task.CLASSIFICATION else None

    def difference(expected: Any, got: Any, what: str, names: Sequence[str] | None) -> Difference:
        (labels, native_proba), (onnx_labels, proba) = expected, got
        if task is not Task.CLASSIFICATION:
            want = labels.astype(float)
            values = np.asarray(onnx_labels, dtype=float)
            return _compared(values, want, "values", VALUE_TOLERANCE, True, what, names)
        wrong = sum(str(a) != str(b) for a, b in zip(onnx_labels, labels, strict=True))
        if wrong:
            return f"labels differ on {wrong} of {len(labels)} {what}", 0.0
        if proba is None or native_proba is None:
            return None, 0.0
        got_proba = np.asarray(proba, dtype=float)
        kind = "probabilities"
        return _compared(got_proba, native_proba, kind, PROBABILITY_TOLERANCE, False, what, names)

    return _Parity(native, onnx.run_frame, difference)


def _unsupervised(model: Any, onnx: OnnxModel, output: Output) -> _Parity:
    """A clustering's or an anomaly detector's: compared with what native serving answers."""
    served = SklearnPredictor(model, Signature([], output))

    def difference(
        expected: Predictions, got: Any, what: str, names: Sequence[str] | None
    ) -> Difference:
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
            mine = np.asarray(mine, dtype=float)
            problem, diff = _compared(mine, want, name, limit, relative, what, names)
            if problem is not None:
                return problem, 0.0
            worst = max(worst, diff)
        return None, worst

    return _Parity(
        served.predict_frame,
        lambda frame: unsupervised_answer(output, onnx.frame_results(frame)),
        difference,
    )


def _compared(
    got: np.ndarray[Any, Any],
    want: np.ndarray[Any, Any],
    kind: str,
    limit: float,
    relative: bool,
    what: str,
    names: Sequence[str] | None,
) -> Difference:
    """The difference of `got` from `want` beyond `limit` (None: none), and the largest
    (`relative`: to the wanted value's size, at least 1); `names` are the features missing in
    each row of the probe rows."""
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
    if not worst <= limit:  # NaN (the model's own answer missing) compares false: a difference
        how = " relative" if relative else ""
        return f"{kind} differ by up to {worst:.2g}{how} (tolerance {limit:g}) on {what}", 0.0
    return None, worst


def _proba(model: Any, frame: pd.DataFrame) -> np.ndarray[Any, Any] | None:
    if not hasattr(model, "predict_proba"):
        return None
    return np.asarray(model.predict_proba(frame), dtype=float)
