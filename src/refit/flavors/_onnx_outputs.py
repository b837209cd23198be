"""Reading a graph's outputs as refit's answers: labels, probabilities and scores.

A classifier or regressor (`answer`) gives:

- one output: the values (regression), the labels, or, for a classifier whose output is a
  float `[N, classes]` tensor, the probabilities (the label is the most probable class);
- two outputs: the labels, then the probabilities, as a `[N, classes]` tensor or as a list
  of `{class: probability}` maps (skl2onnx's ZipMap).

A clustering or an anomaly detector (`unsupervised_answer`) gives two outputs, as skl2onnx
1.20 converts them:

- KMeans, MiniBatchKMeans: `label` ([N] int64), then `scores` ([N, C] float): the Euclidean
  distance to each centre, what `transform` gives (not its square);
- GaussianMixture, BayesianGaussianMixture: `label` ([N, 1]), then `probabilities` ([N, C]);
- IsolationForest, OneClassSVM, LocalOutlierFactor (`novelty=True`): `label` ([N, 1], -1 for
  an anomaly), then `scores` ([N, 1]): `decision_function`, whose negation is refit's score.
  The flag is read from the score (above 0), as native serving flags it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from refit.errors import ArtifactError
from refit.signature import DISTANCES, Output
from refit.spec import Task

Array = np.ndarray[Any, Any]


def answer(
    results: list[Any], classes: list[Any] | None, proba_only: bool, bool_labels: bool
) -> tuple[Array, Any]:
    """A classifier's labels and probabilities (None without them), or a regressor's values."""
    first = np.asarray(results[0])
    if proba_only:
        assert classes is not None
        return np.asarray(classes, dtype=object)[first.argmax(axis=1)], first
    if first.ndim == 2 and first.shape[1] == 1:
        first = first[:, 0]
    if bool_labels and first.dtype.kind in "iu":
        first = first.astype(bool)  # ONNX has no bool labels: classes False, True as 0, 1
    if len(results) == 1:
        return first, None
    proba = results[1]
    if isinstance(proba, list):  # ZipMap: one {class: probability} map per row
        proba = _unzip(proba, classes)
    return first, np.asarray(proba)


def _unzip(maps: list[dict[Any, float]], known: list[Any] | None) -> Array:
    if not maps:
        return np.zeros((0, len(known or [])))
    classes = known or sorted(maps[0])
    keys = {str(key): key for key in maps[0]}
    if sorted(keys) != sorted(str(c) for c in classes):
        raise ArtifactError(
            f"the ONNX model gives probabilities of classes {', '.join(keys)}, not of "
            f"the model's classes {', '.join(map(str, classes))}"
        )
    order = [keys[str(c)] for c in classes]
    return np.array([[row[k] for k in order] for row in maps], dtype=np.float64)


def unsupervised(output: Output) -> bool:
    """Whether answers of `output` are read by `unsupervised_answer`."""
    return output.task in (Task.CLUSTERING, Task.ANOMALY)


def check_outputs(output: Output, shapes: Sequence[Sequence[Any]]) -> None:
    """Refuse a graph whose outputs (their `shapes`) cannot give what `output` promises."""
    second = output.task is Task.ANOMALY or output.probabilities or output.scores == DISTANCES
    if second and len(shapes) != 2:
        what = "anomaly detector" if output.task is Task.ANOMALY else "clustering"
        raise ArtifactError(
            f"the ONNX model of a {what} has {len(shapes)} output(s); refit reads two: the "
            "labels, then the scores (or a mixture's probabilities)"
        )
    width, columns = len(output.classes or []), shapes[-1][-1] if shapes[-1] else None
    if output.task is Task.CLUSTERING and second and isinstance(columns, int) and columns != width:
        raise ArtifactError(
            f"the ONNX model's second output has {columns} columns, but the model has "
            f"{width} clusters"
        )


def unsupervised_answer(output: Output, results: list[Any]) -> tuple[Array, Any, Any]:
    """A clustering's cluster ids, probabilities (a mixture's) and distances, or an anomaly
    detector's flags and scores (its second output negated): (labels, probabilities,
    scores), None where the model gives none, all float64 but the labels."""
    if output.task is Task.ANOMALY:
        score = -np.asarray(results[1], dtype=np.float64).reshape(-1)
        return score > 0, None, score
    labels = np.asarray(results[0]).reshape(-1).astype(np.int64)
    second = None if len(results) < 2 else np.asarray(results[1], dtype=np.float64)
    if output.probabilities:
        return labels, second, None
    return labels, None, second if output.scores == DISTANCES else None
