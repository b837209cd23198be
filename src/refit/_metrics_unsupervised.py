"""The formulas of the clustering and anomaly metrics (`refit.metrics` dispatches to them).

Clustering, from the rows' cluster ids and the rows in the evaluation space (see
`refit.train.unsupervised`): `silhouette` (on at most `SILHOUETTE_ROWS` rows, a seeded sample),
`davies_bouldin`, `calinski_harabasz`. Rows in fewer than two clusters (or each in its own)
score the worst value of each: `WORST`.

Anomaly, from each row's score (higher is more anomalous; above 0 is flagged): with a label,
`roc_auc` and `average_precision` of the score, `f1`, `precision` and `recall` of the flag;
without one, the Excess-Mass and Mass-Volume criteria of Goix, "How to Evaluate the Quality of
Unsupervised Anomaly Detection Algorithms?" (2016). Both read the detector's level sets
`{normality >= u}` (normality is minus the score) through their mass, the share of the rows in
them, and their volume, the share of `UNIFORM_ROWS` points drawn uniformly in the rows' bounding
box that fall in them (so the box has volume 1):

- `excess_mass`, higher is better: the area under EM(t) = max_u mass(u) - t * volume(u), for
  t from 0 to the first t where EM(t) falls to `EM_LEVEL` (0.9; at most `EM_T_MAX` = 100);
- `mass_volume`, lower is better: the area under MV(alpha), the volume of the smallest level
  set holding a share alpha of the rows, for alpha from 0.9 to 0.999 (`MV_ALPHAS`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import (
    average_precision_score,
    calinski_harabasz_score,
    davies_bouldin_score,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
    silhouette_score,
)

Array = np.ndarray[Any, Any]

SILHOUETTE_ROWS = 5_000
SEED = 0
"""The seed of every sample drawn to evaluate: the silhouette's rows, the uniform points."""
WORST = {"silhouette": -1.0, "davies_bouldin": 1e6, "calinski_harabasz": 0.0}
"""What rows in fewer than two clusters (or each row in its own) score."""
UNIFORM_ROWS = 10_000
EM_LEVEL = 0.9
EM_T_MAX = 100.0
EM_POINTS = 1_000
MV_ALPHAS = np.linspace(0.9, 0.999, 100)
LEVELS = 1_000
"""The most level sets EM reads (quantiles of the rows' normality)."""


class Unavailable(Exception):
    """A metric cannot be computed for these rows; the message says why."""


def cluster_count(labels: Array) -> int:
    return len(np.unique(labels))


def clustering(name: str, space: Array, labels: Array) -> float:
    """The clustering metric `name` of rows `space` ([N, D]) in clusters `labels` ([N])."""
    if name == "silhouette" and len(labels) > SILHOUETTE_ROWS:
        keep = np.random.default_rng(SEED).choice(len(labels), SILHOUETTE_ROWS, replace=False)
        space, labels = space[keep], labels[keep]
    if not 2 <= cluster_count(labels) < len(labels):
        return WORST[name]
    score = {
        "silhouette": silhouette_score,
        "davies_bouldin": davies_bouldin_score,
        "calinski_harabasz": calinski_harabasz_score,
    }[name]
    return float(score(space, labels))


def ranked(name: str, truth: Array, score: Array) -> float:
    """`roc_auc` or `average_precision` of the anomaly `score` ([N]) against `truth` (bool)."""
    if len(np.unique(truth)) < 2:
        raise Unavailable("the rows hold anomalies only, or none")
    ranking = roc_auc_score if name == "roc_auc" else average_precision_score
    return float(ranking(truth, score))


def flagged(name: str, truth: Array, flags: Array) -> float:
    """`f1`, `precision` or `recall` of the anomaly flags against `truth` (both bool, [N])."""
    flag = {"f1": f1_score, "precision": precision_score, "recall": recall_score}[name]
    return float(flag(truth, flags.astype(bool), pos_label=True, zero_division=0.0))


def excess_mass(score: Array, uniform: Array) -> float:
    """Goix's EM criterion of a detector scoring the rows `score` and the uniform points
    `uniform` (see the module); higher is better."""
    mass, volume = _level_sets(-score, -uniform)
    over = mass > EM_LEVEL
    with np.errstate(divide="ignore", invalid="ignore"):
        falls = np.where(volume[over] > 0, (mass[over] - EM_LEVEL) / volume[over], np.inf)
    t_max = min(EM_T_MAX, float(falls.max())) if falls.size else 0.0
    if t_max <= 0:
        return 0.0
    t = np.linspace(0.0, t_max, EM_POINTS)
    em = np.max(mass[:, None] - t[None, :] * volume[:, None], axis=0)
    return float(np.trapezoid(em, t))


def mass_volume(score: Array, uniform: Array) -> float:
    """Goix's MV criterion (see the module); lower is better."""
    normality = np.sort(-score)[::-1]
    uniform_normality = np.sort(-uniform)
    kept = np.ceil(MV_ALPHAS * len(normality)).astype(int).clip(1, len(normality))
    thresholds = normality[kept - 1]
    inside = len(uniform_normality) - np.searchsorted(uniform_normality, thresholds, "left")
    return float(np.trapezoid(inside / len(uniform_normality), MV_ALPHAS))


def _level_sets(normality: Array, uniform: Array) -> tuple[Array, Array]:
    """Mass and volume of the level sets `{normality >= u}` at up to `LEVELS` thresholds u."""
    if not len(normality) or not len(uniform):
        raise Unavailable("no rows to measure level sets with")
    levels = np.unique(normality)
    if len(levels) > LEVELS:
        levels = np.unique(np.quantile(normality, np.linspace(0, 1, LEVELS)))
    rows, points = np.sort(normality), np.sort(uniform)
    mass = (len(rows) - np.searchsorted(rows, levels, "left")) / len(rows)
    volume = (len(points) - np.searchsorted(points, levels, "left")) / len(points)
    return mass, volume


def anomaly_truth(values: Any) -> Array:
    """An anomaly label as bools (true: an anomaly): bools, or the numbers 0 and 1 (also as
    text: `0`, `1`, `true`, `false`); a `ValueError` says what else it holds."""
    array = np.asarray(values, dtype=object)
    truth = np.empty(len(array), dtype=bool)
    for i, value in enumerate(array):
        meaning = _TRUTH.get(value.strip().lower() if isinstance(value, str) else value)
        if meaning is None:
            found = sorted({_shown(v) for v in array.tolist()})
            if len(found) == 2:
                raise ValueError(
                    f"holds two values, {found[0]} and {found[1]}, but an anomaly label says "
                    "which rows are anomalies: write the anomalous value as true (or 1) and the "
                    "other as false (or 0)"
                )
            shown = ", ".join(found[:3]) + (", ..." if len(found) > 3 else "")
            raise ValueError(
                f"holds {shown}, but an anomaly label is true or 1 for an anomaly and false or "
                "0 for a normal row (every row needs one): write the label that way"
            )
        truth[i] = meaning
    return truth


_TRUTH: dict[Any, bool] = {True: True, False: False, "true": True, "false": False}
_TRUTH.update({"1": True, "0": False, "1.0": True, "0.0": False})


def _shown(value: Any) -> str:
    value = value.item() if isinstance(value, np.generic) else value
    return repr(int(value) if isinstance(value, float) and value.is_integer() else value)
