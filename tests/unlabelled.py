"""Projects for clustering and anomaly detection: blobs with a known number of clusters, and
normal rows with a few far-away anomalies, written as CSV and ingested."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from sklearn.datasets import make_blobs

from refit.data.ingest import run_ingest
from refit.project import load_project
from refit.services import open_services
from refit.spec import SPEC_FILE

CLUSTERS = 4
LABEL = "anomalous"


def blob_rows(rows: int = 400, centers: int = CLUSTERS, seed: int = 0) -> pd.DataFrame:
    """Well-separated blobs in 3 dimensions, `centers` of them."""
    X, _ = make_blobs(rows, n_features=3, centers=centers, cluster_std=0.6, random_state=seed)
    return pd.DataFrame(X, columns=["x", "y", "z"])


def anomaly_rows(rows: int = 600, share: float = 0.05, seed: int = 0) -> pd.DataFrame:
    """Normal rows around 0 and a `share` of anomalies far from them, labelled `anomalous`."""
    rng = np.random.default_rng(seed)
    anomalies = int(rows * share)
    normal = rng.normal(0.0, 1.0, size=(rows - anomalies, 3))
    far = rng.uniform(4.0, 7.0, size=(anomalies, 3)) * rng.choice([-1.0, 1.0], size=(anomalies, 3))
    frame = pd.DataFrame(np.vstack([normal, far]), columns=["x", "y", "z"])
    frame[LABEL] = [False] * len(normal) + [True] * anomalies
    return frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)


def write_project(
    root: Path,
    rows: pd.DataFrame,
    model: dict[str, Any],
    *,
    target: str | None = None,
    gate: dict[str, Any] | None = None,
    name: str = "unsup",
    ingest: bool = True,
    **spec: Any,
) -> Path:
    """A project of `rows` (float features; `target` the label, if any) and `model`, with
    its rows ingested unless `ingest=False`."""
    incoming = root / "data" / "incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    rows.to_csv(incoming / "batch-0001.csv", index=False)
    data: dict[str, Any] = {
        "source": {"kind": "csv", "path": "data/incoming"},
        "features": {c: "float" for c in rows.columns if c != target},
    }
    if target is not None:
        data["target"] = target
    document = {"name": name, "data": data, "model": model, "gate": gate or {}, **spec}
    (root / SPEC_FILE).write_text(yaml.safe_dump(document, sort_keys=False), "utf-8")
    if ingest:
        with open_services(load_project(root)) as services:
            result = run_ingest(services.project, services.registry, services.store)
            assert result.status == "accepted", result.message
    return root


def set_model(root: Path, **fields: Any) -> None:
    """Rewrite fields of the project's `model` section (None removes one)."""
    document = yaml.safe_load((root / SPEC_FILE).read_text("utf-8"))
    for key, value in fields.items():
        if value is None:
            document["model"].pop(key, None)
        else:
            document["model"][key] = value
    (root / SPEC_FILE).write_text(yaml.safe_dump(document, sort_keys=False), "utf-8")
