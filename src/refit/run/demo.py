"""`refit demo`: an example project, a simulated data feed, and the loop turning on it.

The feed drops a new CSV file into `data/incoming/` (or any folder or fsspec URL, such as
`s3://refit/incoming/` for `refit feed`) every few seconds. Its rows are drawn from the
example's dataset, as the example's world brings them (`refit.examples.Example.drift`): in the
breast-cancer example's, the measurements shift a little more with every batch, and every
third batch arrives with a share of wrong labels, so that, trained on a sliding window of
recent rows, some new versions beat production and some are rejected by the gate. An example
with no drift brings its rows as they are.

The demo's requests come from the same world (`Feed.requests`): the rows of the batch still
being gathered, whose labels arrive later. The server logs them and the monitor, every few
seconds, judges them against what the version in production was trained on; when they drifted,
it asks for the training that the next snapshot then answers ("caused by drift in ...").
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pandas as pd
import yaml
from fsspec.implementations.local import LocalFileSystem

from refit.examples import DEMO, INCOMING, create_project, find_example
from refit.spec import SPEC_FILE


def create_demo_project(
    root: Path,
    *,
    example: str = DEMO,
    ingest: str = "3s",
    train: str = "5s",
    monitor: str | None = None,
) -> Path:
    """The bundled `example`, on fast schedules, a sliding window of rows and the example's
    demo gate; with `monitor` (as `refit demo` makes it), its monitor on that schedule judges
    the last 30 s of requests and asks for training when they drift."""
    chosen = find_example(example)
    create_project(root, example)
    path = root / SPEC_FILE
    header = "".join(line for line in path.read_text().splitlines(True) if line.startswith("#"))
    spec = yaml.safe_load(path.read_text())
    spec["data"]["snapshot"] = {"mode": "window", "rows": 400}
    if chosen.demo_gate is not None:
        spec["gate"] = dict(chosen.demo_gate)
    spec["schedule"] = {"ingest": ingest, "train": train}
    if monitor is not None:
        spec["schedule"]["monitor"] = monitor
        spec["monitor"] = {
            "flush_seconds": 1.0,
            "window": "30s",
            "min_rows": 100,
            "retrain_on_drift": True,
        }
    path.write_text(header + yaml.safe_dump(spec, sort_keys=False))
    return root


_FEED_FILE = re.compile(r"feed-(\d+)\.csv")


class Feed:
    """New batches of an example's rows (default breast-cancer's), arriving as files
    `feed-0001.csv`, ..., drawn from the example's world (`Example.drift`).

    `to` is a folder or an fsspec URL (`s3://refit/incoming/`; S3 credentials and endpoint
    from `storage_options` or the usual `AWS_*` variables). Numbering continues after the
    files already there, so a restarted feed never rewrites a batch that was read. A store
    that cannot be listed or written raises OSError, whatever its backend.
    """

    def __init__(
        self,
        to: str | Path,
        *,
        example: str = DEMO,
        interval: float = 4.0,
        rows: int = 80,
        seed: int = 0,
        storage_options: dict[str, Any] | None = None,
    ):
        self.fs, self.folder = fsspec.core.url_to_fs(str(to), **(storage_options or {}))
        self.folder = self.folder.rstrip("/")
        self.interval = interval
        self.rows = rows
        chosen = find_example(example)
        self.data = chosen.load()
        data: dict[str, Any] = chosen.spec["data"]  # type: ignore[assignment]
        self.target: str | None = data.get("target")
        self.drift = chosen.drift
        self.count = self._last_number()
        self.seed = seed
        self._asked = 0
        # A restarted feed is seeded by where it resumes too: new rows, not the same again.
        self.random = np.random.default_rng(seed if self.count == 0 else [seed, self.count])

    @classmethod
    def into_project(cls, root: Path, **options: Any) -> Feed:
        """A feed into a project's `data/incoming/` folder, as `refit demo` runs it."""
        return cls(root / INCOMING, **options)

    def _last_number(self) -> int:
        try:
            listed = self.fs.ls(self.folder, detail=False) if self.fs.isdir(self.folder) else []
        except Exception as exc:  # each fsspec backend has its own errors (botocore's for S3)
            raise OSError(f"cannot list {self.fs.unstrip_protocol(self.folder)}: {exc}") from exc
        names = (str(name).rsplit("/", 1)[-1] for name in listed)
        numbers = [int(m.group(1)) for m in map(_FEED_FILE.fullmatch, names) if m]
        return max(numbers, default=0)

    def batch(
        self, number: int, random: np.random.Generator | None = None, size: int | None = None
    ) -> pd.DataFrame:
        """Batch `number` (1, 2, ...): resampled rows, as the example's world brings them."""
        random = self.random if random is None else random
        rows = self.data.sample(size or self.rows, replace=True, random_state=random)
        if self.drift is not None:
            rows = self.drift(rows, number, random)
        return rows.reset_index(drop=True)

    def requests(self, rows: int) -> list[dict[str, Any]]:
        """Records (without their labels) of the world as it is now: drawn as the next batch
        will be, its labels yet to come. Its own random numbers: the feed's stay its own."""
        number = self.count + 1
        random = np.random.default_rng([self.seed, number, self._asked])
        self._asked += 1
        world = self.batch(number, random, rows)
        if self.target is not None:
            world = world.drop(columns=[self.target])
        return [{str(k): v for k, v in row.items()} for row in world.to_dict("records")]

    def drop(self) -> str:
        """Write the next batch as a new file, atomically (ingest never sees half a file);
        returns its path, or its URL for an object store."""
        self.count += 1
        name = f"{self.folder}/feed-{self.count:04d}.csv"
        data = self.batch(self.count).to_csv(index=False).encode("utf-8")
        if isinstance(self.fs, LocalFileSystem):
            os.makedirs(self.folder, exist_ok=True)
            tmp = f"{name}.tmp"  # a suffix that sources skip
            with open(tmp, "wb") as file:
                file.write(data)
            os.replace(tmp, name)
            return name
        url = str(self.fs.unstrip_protocol(name))
        try:
            self.fs.pipe_file(name, data)  # one PUT: an object appears whole or not at all
        except Exception as exc:  # as in _last_number: one kind of error for every backend
            raise OSError(f"cannot write {url}: {exc}") from exc
        return url

    def run(self, stop: threading.Event) -> None:
        while not stop.wait(self.interval):
            self.drop()
