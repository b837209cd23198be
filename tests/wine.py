"""A project of scikit-learn's wine data, whose feature names are scikit-learn's own
(`od280/od315_of_diluted_wines` among them), with its rows ingested."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from refit.data.ingest import run_ingest
from refit.project import load_project
from refit.services import open_services
from refit.spec import SPEC_FILE

TARGET = "cultivar"


def wine_rows() -> pd.DataFrame:
    from sklearn.datasets import load_wine

    bunch = load_wine(as_frame=True)
    frame = bunch.data.copy()
    frame[TARGET] = bunch.target.map(lambda i: f"class_{i}")
    return frame


def wine_project(root: Path, **model: Any) -> Path:
    """The project in `root`, its rows ingested; `model` overrides the spec's `model`
    (default: a LogisticRegression pipeline built by refit)."""
    rows = wine_rows()
    incoming = root / "data" / "incoming"
    incoming.mkdir(parents=True)
    rows.to_csv(incoming / "wine.csv", index=False)
    spec = {
        "name": "wine",
        "data": {
            "source": {"kind": "csv", "path": "data/incoming"},
            "target": TARGET,
            "features": {name: "float" for name in rows.columns if name != TARGET},
        },
        "model": model
        or {
            "task": "classification",
            "estimator": "sklearn.linear_model.LogisticRegression",
            "params": {"max_iter": 2000},
            "metric": "accuracy",
        },
        "gate": {"min": 0.5},
    }
    (root / SPEC_FILE).write_text(yaml.safe_dump(spec, sort_keys=False), "utf-8")
    with open_services(load_project(root)) as services:
        ingested = run_ingest(services.project, services.registry, services.store)
        assert ingested.status == "accepted", ingested.message
    return root
