"""Example projects built from datasets that ship inside scikit-learn, so they work offline.

`create_project(dir, "breast-cancer")` writes a `refit.yaml`, the first batch of rows as a CSV
file in `data/incoming/`, the example's own project modules (the `hooks` example's
`hooks.py`), and `request.json` / `batch.json` to try the API with; with
`workflow=True` (as `refit init` asks), also the project's GitHub Actions workflow.
`example_rows(name)` gives the whole dataset, from which `drop_batch` writes more batches into
that folder to watch the loop retrain. Each task has one: `breast-cancer` (classification),
`diabetes` (regression), `clusters` (clustering, k found by the search), `anomalies`
(anomaly detection with a label that scores the holdout) and `hooks` (a classifier with its own
feature and post-processing code).
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from refit.deploy.workflow import WORKFLOW_FILE, render_workflow
from refit.errors import AlreadyExistsError, NotFoundError
from refit.spec import SPEC_FILE

INCOMING = Path("data/incoming")


Drift = Callable[[pd.DataFrame, int, np.random.Generator], pd.DataFrame]
"""How `refit demo`'s world moves away from an example's data: (rows drawn from it, batch
number 1, 2, ..., random numbers) -> those rows as batch `number` brings them."""


@dataclass(frozen=True)
class Example:
    description: str
    load: Callable[[], pd.DataFrame]
    spec: dict[str, object]
    files: dict[str, str] = field(default_factory=dict)
    """Project files the example writes beside its refit.yaml (path -> text)."""
    drift: Drift | None = None
    """The world of `refit demo` (None: batches bring the example's rows as they are)."""
    demo_gate: dict[str, object] | None = None
    """The gate of `refit demo`, where the drift is too much for the example's own (None:
    the example's)."""


def _snake(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def _breast_cancer() -> pd.DataFrame:
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer(as_frame=True)
    frame = bunch.data.rename(columns=_snake)
    frame["diagnosis"] = bunch.target.map(dict(enumerate(bunch.target_names)))
    return pd.DataFrame(frame)


def _drifting_cancer(rows: pd.DataFrame, number: int, random: np.random.Generator) -> pd.DataFrame:
    """The measurements shift a little more with every batch, and every third batch arrives
    with a share of wrong labels."""
    features = rows.columns.drop("diagnosis")
    drift = 1.0 + 0.02 * number
    noise = random.normal(1.0, 0.03, size=(len(rows), len(features)))
    rows[features] = rows[features].to_numpy() * drift * noise
    if number % 3 == 0:
        flip = random.random(len(rows)) < 0.2
        labels = rows["diagnosis"].to_numpy(dtype=object)
        labels[flip] = np.where(labels[flip] == "benign", "malignant", "benign")
        rows["diagnosis"] = labels
    return rows


def _diabetes() -> pd.DataFrame:
    from sklearn.datasets import load_diabetes

    bunch = load_diabetes(as_frame=True, scaled=False)
    frame = bunch.data.copy()
    frame["sex"] = frame["sex"].map({1.0: "a", 2.0: "b"})
    frame["progression"] = bunch.target
    return pd.DataFrame(frame)


def _wine() -> pd.DataFrame:
    from sklearn.datasets import load_wine

    bunch = load_wine(as_frame=True)
    frame = bunch.data.rename(columns=_snake)
    # The three cultivars of the dataset's wines, grown in the same region of Italy.
    frame["cultivar"] = bunch.target.map({0: "barolo", 1: "grignolino", 2: "barbera"})
    return pd.DataFrame(frame)


_WINE_HOOKS = '''\
"""This project's own code. refit stores it with each version it trains, and a server runs a
version with the code it was trained with (refit.yaml: model.features, model.postprocess)."""

import numpy as np

MIN_CONFIDENCE = 0.7


def features(frame):
    """The model's inputs from a request's measurements: them, with a log and two ratios."""
    out = frame.copy()
    out["log_proline"] = np.log1p(frame["proline"].clip(lower=0))
    out["phenol_ratio"] = _ratio(frame["flavanoids"], frame["total_phenols"])
    out["colour_per_hue"] = _ratio(frame["color_intensity"], frame["hue"])
    return out


def _ratio(top, bottom):
    return top / bottom.where(bottom != 0)  # missing (and imputed) rather than infinite


def postprocess(record, prediction):
    """Withhold an answer the model is unsure of rather than send a guess."""
    if max(prediction["probabilities"].values()) < MIN_CONFIDENCE:
        return None
    return prediction
'''


def _wine_measurements() -> pd.DataFrame:
    from sklearn.datasets import load_wine

    frame = load_wine(as_frame=True).data.rename(columns=_snake)
    # shuffled: the data lists the cultivars in turn, and every batch should hold all three
    return pd.DataFrame(frame.sample(frac=1.0, random_state=0).reset_index(drop=True))


def _rare_malignant() -> pd.DataFrame:
    """The benign tumours and one malignant in twenty (`malignant` is the label), shuffled."""
    frame = _breast_cancer()
    malignant = frame["diagnosis"] == "malignant"
    kept = frame[~malignant | (malignant.cumsum() % 10 == 1)]
    labelled = kept.drop(columns=["diagnosis"]).assign(malignant=malignant[kept.index])
    return pd.DataFrame(labelled.sample(frac=1.0, random_state=0).reset_index(drop=True))


def _schedule() -> dict[str, str]:
    return {"ingest": "10s", "train": "20s"}


EXAMPLES: dict[str, Example] = {
    "breast-cancer": Example(
        description="classify tumours as malignant or benign from 30 measurements",
        load=_breast_cancer,
        spec={
            "name": "breast-cancer",
            "data": {
                "source": {"kind": "csv", "path": str(INCOMING)},
                "target": "diagnosis",
            },
            "model": {
                "task": "classification",
                "estimator": "sklearn.ensemble.HistGradientBoostingClassifier",
                "params": {"max_iter": 100, "random_state": 0},
                "metric": "roc_auc",
            },
            "gate": {"min": 0.9, "min_improvement": 0.0},
            "schedule": _schedule(),
        },
        drift=_drifting_cancer,
        demo_gate={"min": 0.85, "min_improvement": 0.0},
    ),
    "diabetes": Example(
        description="predict disease progression one year ahead (regression)",
        load=_diabetes,
        spec={
            "name": "diabetes",
            "data": {
                "source": {"kind": "csv", "path": str(INCOMING)},
                "target": "progression",
            },
            "model": {
                "task": "regression",
                "estimator": "sklearn.linear_model.Ridge",
                "params": {"alpha": 1.0},
                "metric": "rmse",
            },
            "gate": {"max": 80.0, "min_improvement": 0.0},
            "schedule": _schedule(),
        },
    ),
    "hooks": Example(
        description="tell a wine's cultivar, with a feature hook and a filter of unsure answers",
        load=_wine,
        spec={
            "name": "hooks",
            "data": {
                "source": {"kind": "csv", "path": str(INCOMING)},
                "target": "cultivar",
            },
            "model": {
                "task": "classification",
                "estimator": "sklearn.linear_model.LogisticRegression",
                "params": {"max_iter": 1000},
                "metric": "accuracy",
                "features": "hooks:features",
                "postprocess": "hooks:postprocess",
            },
            "gate": {"min": 0.8, "min_improvement": 0.0},
            "schedule": _schedule(),
        },
        files={"hooks.py": _WINE_HOOKS},
    ),
    "clusters": Example(
        description=(
            "group wines by their 13 measurements, with no label (clustering); the search of "
            "k from 2 to 10 finds the 3 cultivars the data holds"
        ),
        load=_wine_measurements,
        spec={
            "name": "clusters",
            "data": {"source": {"kind": "csv", "path": str(INCOMING)}},
            "model": {
                "task": "clustering",
                "estimator": "sklearn.cluster.KMeans",
                "params": {"n_init": 10, "random_state": 0},
                "metric": "silhouette",
            },
            "gate": {"min": 0.1, "min_improvement": 0.0},
            "schedule": _schedule(),
        },
    ),
    "anomalies": Example(
        description=(
            "flag malignant tumours as anomalies among benign ones (1 in 20), learnt without "
            "the label, which only scores the holdout"
        ),
        load=_rare_malignant,
        spec={
            "name": "anomalies",
            "data": {
                "source": {"kind": "csv", "path": str(INCOMING)},
                "target": "malignant",
            },
            "model": {
                "task": "anomaly",
                "estimator": "sklearn.ensemble.IsolationForest",
                "params": {"n_estimators": 50, "random_state": 0},
                "contamination": 0.05,
                "metric": "roc_auc",
            },
            "gate": {"min": 0.8, "min_improvement": 0.0},
            "schedule": _schedule(),
        },
    ),
}


DEMO = "breast-cancer"
"""The example that `refit demo` and `refit feed` run unless told another."""


def example_rows(name: str) -> pd.DataFrame:
    """The whole dataset of an example, target included, in the example's column names."""
    return find_example(name).load()


def create_project(
    root: Path, example: str, first_batch: float = 0.6, *, workflow: bool = False
) -> Path:
    """Write an example project into `root` (which must be empty or absent), with its
    GitHub Actions workflow when `workflow`."""
    chosen = find_example(example)
    _check_empty(root)
    frame = chosen.load()
    spec = copy.deepcopy(chosen.spec)
    data: dict[str, object] = spec["data"]  # type: ignore[assignment]
    labels = [data["target"]] if "target" in data else []
    data["features"] = {
        col: "float" if pd.api.types.is_numeric_dtype(frame[col]) else "category"
        for col in frame.columns
        if col not in labels
    }
    (root / INCOMING).mkdir(parents=True, exist_ok=True)
    header = f"# refit project: {chosen.description}.\n# Reference: refit's README, 'The spec'.\n"
    (root / SPEC_FILE).write_text(header + yaml.safe_dump(spec, sort_keys=False), "utf-8")
    for name, text in chosen.files.items():
        (root / name).write_text(text, "utf-8")
    rows = max(1, int(len(frame) * first_batch))
    frame.iloc[:rows].to_csv(root / INCOMING / "batch-0001.csv", index=False)
    _write_requests(root, frame.drop(columns=labels).tail(3))
    if workflow:
        _write_workflow(root, str(chosen.spec["name"]))
    return root


def _write_requests(root: Path, inputs: pd.DataFrame) -> None:
    """`request.json` (one record) and `batch.json` (three), to try the API with curl."""
    records = json.loads(inputs.to_json(orient="records", double_precision=6))
    (root / "request.json").write_text(json.dumps(records[0], indent=2) + "\n", "utf-8")
    batch = json.dumps({"records": records}, indent=2)
    (root / "batch.json").write_text(batch + "\n", "utf-8")


def create_blank_project(root: Path, *, workflow: bool = False) -> Path:
    """Write a commented `refit.yaml` for the user's own CSV files, with the project's GitHub
    Actions workflow when `workflow`."""
    _check_empty(root)
    (root / INCOMING).mkdir(parents=True, exist_ok=True)
    name = _snake(root.resolve().name).replace("_", "-") or "my-model"
    (root / SPEC_FILE).write_text(_BLANK.format(name=name), "utf-8")
    if workflow:
        _write_workflow(root, name)
    return root


def _write_workflow(root: Path, name: str) -> None:
    path = root / WORKFLOW_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_workflow(name, INCOMING), "utf-8")


def find_example(name: str) -> Example:
    """The bundled example called `name`; NotFoundError names the others."""
    if name not in EXAMPLES:
        raise NotFoundError(f"no example {name!r}; the examples are: {', '.join(EXAMPLES)}")
    return EXAMPLES[name]


def _check_empty(root: Path) -> None:
    if root.exists() and any(root.iterdir()):
        if (root / SPEC_FILE).exists():
            raise AlreadyExistsError(f"{root} already holds a refit project ({SPEC_FILE} exists)")
        raise AlreadyExistsError(f"{root} is not empty; give a new or empty folder")


_BLANK = """\
# refit project. Drop CSV files into data/incoming/, describe their columns below,
# then run `refit ingest` and `refit train`. Reference: refit's README, 'The spec'.
name: {name}
data:
  source: {{kind: csv, path: data/incoming}}
  target: label                 # the column to predict
  features:                     # every input column: float, int, bool or category
    amount: float
    country: category
model:
  task: classification          # or regression
  estimator: sklearn.ensemble.HistGradientBoostingClassifier
  params: {{max_iter: 100}}
  metric: roc_auc               # accuracy, f1, roc_auc, log_loss | rmse, mae, r2
gate:
  min: 0.7                      # the floor a new version must reach (max: for rmse, mae, ...)
  min_improvement: 0.0          # how much better than production it must be
"""


def drop_batch(root: Path, example: str, number: int, of: int, first_batch: float = 0.6) -> Path:
    """Write batch `number` (2..of) of the rows `create_project` left out, as a new CSV file."""
    frame = find_example(example).load()
    start = max(1, int(len(frame) * first_batch))
    rest = frame.iloc[start:]
    size = -(-len(rest) // (of - 1))
    part = rest.iloc[(number - 2) * size : (number - 1) * size]
    path = root / INCOMING / f"batch-{number:04d}.csv"
    part.to_csv(path, index=False)
    return path
