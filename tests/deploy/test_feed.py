"""`refit feed`: the demo's drifting batches dropped into a folder or an S3 bucket."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import fsspec
import pandas as pd

from refit.examples import example_rows
from servers import S3Location, free_port


def feed(
    to: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "refit", "feed", to, "--interval", "0.05", *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_feed_drops_numbered_batches_into_a_bucket_and_resumes_after_them(
    s3_storage: S3Location,
) -> None:
    to = f"{s3_storage.url}/incoming/"
    env = {"AWS_ENDPOINT_URL": s3_storage.endpoint_url}  # as the Compose stack's feeder has it
    first = feed(to, "--batches", "2", "--rows", "30", env=env)
    assert first.returncode == 0, first.stderr
    again = feed(to, "--batches", "1", "--rows", "30", env=env)
    assert again.returncode == 0, again.stderr

    fs = fsspec.filesystem("s3", skip_instance_cache=True, **s3_storage.storage_options())
    folder = to.removeprefix("s3://").rstrip("/")
    names = sorted(path.rsplit("/", 1)[1] for path in fs.ls(folder, detail=False))
    assert names == ["feed-0001.csv", "feed-0002.csv", "feed-0003.csv"]
    assert f"feed: s3://{folder}/feed-0003.csv: 30 rows" in again.stdout
    columns = list(example_rows("breast-cancer").columns)
    batches = [pd.read_csv(io.BytesIO(fs.cat_file(f"{folder}/{name}"))) for name in names]
    for batch in batches:
        assert list(batch.columns) == columns and len(batch) == 30
        assert set(batch["diagnosis"]) <= {"benign", "malignant"}
    # The restarted feed drew new rows: its batch is not the first run's first batch again.
    assert not batches[2].equals(batches[0])


def test_feed_into_a_folder_leaves_only_whole_csv_files(tmp_path: Path) -> None:
    result = feed(str(tmp_path / "incoming"), "--batches", "2")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "incoming").iterdir()) == [
        "feed-0001.csv",
        "feed-0002.csv",
    ]


def test_feed_refuses_a_bad_interval_as_a_usage_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "refit", "feed", str(tmp_path), "--interval", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "0 is not a number of seconds above 0" in result.stderr
    assert not any(tmp_path.iterdir())


def test_feed_to_a_store_it_cannot_reach_says_so_without_a_traceback() -> None:
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}"}  # nothing listens there
    result = feed("s3://refit/incoming/", "--batches", "1", env=env)
    assert result.returncode == 5
    assert "refit feed: cannot list s3://refit/incoming: " in result.stderr
    assert "internal error" not in result.stderr and "Traceback" not in result.stderr
