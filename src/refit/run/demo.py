"""`refit demo`: an example project, a simulated data feed, and the loop turning on it.

The feed drops a new CSV file into `data/incoming/` every few seconds. Its rows are drawn from
the example's dataset, and the world drifts: the measurements shift a little more with every
batch, and every third batch arrives with a share of wrong labels. Trained on a sliding window
of recent rows, some new versions beat production and some are rejected by the gate.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from refit.examples import INCOMING, create_project, example_rows
from refit.spec import SPEC_FILE

EXAMPLE = "breast-cancer"


def create_demo_project(root: Path, *, ingest: str = "3s", train: str = "5s") -> Path:
    """The breast-cancer example, on fast schedules and a sliding window of rows."""
    create_project(root, EXAMPLE)
    path = root / SPEC_FILE
    header = "".join(line for line in path.read_text().splitlines(True) if line.startswith("#"))
    spec = yaml.safe_load(path.read_text())
    spec["data"]["snapshot"] = {"mode": "window", "rows": 400}
    spec["gate"] = {"min": 0.85, "min_improvement": 0.0}
    spec["schedule"] = {"ingest": ingest, "train": train}
    path.write_text(header + yaml.safe_dump(spec, sort_keys=False))
    return root


class Feed:
    """New batches of rows, arriving as files, drawn from a drifting world."""

    def __init__(self, root: Path, *, interval: float = 4.0, rows: int = 80, seed: int = 0):
        self.root = root
        self.interval = interval
        self.rows = rows
        self.data = example_rows(EXAMPLE)
        self.target = "diagnosis"
        self.random = np.random.default_rng(seed)
        self.count = 0

    def batch(self, number: int) -> pd.DataFrame:
        """Batch `number` (1, 2, ...): resampled rows, shifted by `number`, maybe mislabelled."""
        rows = self.data.sample(self.rows, replace=True, random_state=self.random)
        features = rows.columns.drop(self.target)
        drift = 1.0 + 0.02 * number
        noise = self.random.normal(1.0, 0.03, size=(len(rows), len(features)))
        rows[features] = rows[features].to_numpy() * drift * noise
        if number % 3 == 0:
            flip = self.random.random(len(rows)) < 0.2
            labels = rows[self.target].to_numpy(dtype=object)
            labels[flip] = np.where(labels[flip] == "benign", "malignant", "benign")
            rows[self.target] = labels
        return rows.reset_index(drop=True)

    def drop(self) -> Path:
        """Write the next batch as a new file (atomically: ingest never sees half a file)."""
        self.count += 1
        path = self.root / INCOMING / f"feed-{self.count:04d}.csv"
        tmp = path.with_suffix(".tmp")
        self.batch(self.count).to_csv(tmp, index=False)
        os.replace(tmp, path)
        return path

    def run(self, stop: threading.Event) -> None:
        while not stop.wait(self.interval):
            self.drop()
