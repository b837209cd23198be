"""csv and parquet sources in S3, on the real S3 endpoint of the tests (moto on 127.0.0.1)."""

import hashlib
import io
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fsspec
import pandas as pd
import pytest
from pydantic import ValidationError

from refit.artifacts import open_artifact_store
from refit.data import sources
from refit.data.ingest import run_ingest
from refit.data.sources import Batch, FileSource, open_source
from refit.errors import SourceError
from refit.project import Project
from refit.registry import Registry
from refit.registry.tables import SourceMarkRow
from refit.spec import CsvSource, ParquetSource, S3Options, Spec
from servers import S3Location


def options(location: S3Location) -> S3Options:
    """The `storage.s3` settings that reach the test endpoint."""
    return S3Options.model_validate(
        {
            "endpoint_url": location.endpoint_url,
            "region": location.region,
            "access_key_id": location.key,
            "secret_access_key": location.secret,
        }
    )


def put(location: S3Location, key: str, data: bytes) -> None:
    fs = fsspec.filesystem("s3", skip_instance_cache=True, **location.storage_options())
    fs.pipe_file(f"{location.bucket}/{key}", data)


def csv_source(location: S3Location, path: str = "incoming/") -> FileSource:
    url = f"s3://{location.bucket}/{path}"
    source = open_source(CsvSource(kind="csv", path=url), Path("/nowhere"), options(location))
    assert isinstance(source, FileSource)
    return source


def read_all(source: FileSource, seen: dict[str, str]) -> Batch:
    """Read new rows and commit their marks, as the ingest role does."""
    batch = source.read_new(seen)
    seen.update(batch.restated)
    seen.update(batch.marks)
    return batch


class Downloads:
    """Counts the objects a source downloads and the contents it hashes."""

    def __init__(self, source: FileSource, monkeypatch: pytest.MonkeyPatch) -> None:
        self.gets: Counter[str] = Counter()
        self.hashed = 0
        listing: Any = source.listing
        cat_file: Callable[..., bytes] = listing.fs.cat_file

        def counted_cat_file(path: str, *args: Any, **kwargs: Any) -> bytes:
            self.gets[path.rsplit("/", 1)[-1]] += 1
            return cat_file(path, *args, **kwargs)

        def counted_sha256(data: bytes) -> Any:
            self.hashed += 1
            return hashlib.sha256(data)

        monkeypatch.setattr(listing.fs, "cat_file", counted_cat_file)
        monkeypatch.setattr(sources, "hashlib", type("hashlib", (), {"sha256": counted_sha256}))


def test_a_prefix_is_read_object_by_object_and_each_object_once(
    s3_storage: S3Location,
) -> None:
    put(s3_storage, "incoming/b.csv", b"x,y\n3,c\n")
    put(s3_storage, "incoming/a.csv", b"x,y\n1,a\n2,b\n")
    source = csv_source(s3_storage)
    seen: dict[str, str] = {}

    first = read_all(source, seen)
    url = f"s3://{s3_storage.bucket}/incoming"
    assert first.frame.to_dict("list") == {"x": ["1", "2", "3"], "y": ["a", "b", "c"]}
    assert sorted(first.marks) == [f"file:{url}/a.csv", f"file:{url}/b.csv"]
    assert first.description == f"2 new files: {url}/a.csv, {url}/b.csv"
    assert first.origins is not None
    assert first.origins["_file"].tolist() == [f"{url}/a.csv"] * 2 + [f"{url}/b.csv"]

    assert source.read_new(seen).description == "no new data"
    put(s3_storage, "incoming/c.csv", b"x,y\n4,d\n")
    third = read_all(source, seen)
    assert third.frame["x"].tolist() == ["4"]
    assert list(third.marks) == [f"file:{url}/c.csv"]


def test_unchanged_objects_are_neither_downloaded_nor_hashed(
    s3_storage: S3Location, monkeypatch: pytest.MonkeyPatch
) -> None:
    put(s3_storage, "incoming/a.csv", b"x\n1\n")
    put(s3_storage, "incoming/b.csv", b"x\n2\n")
    source = csv_source(s3_storage)
    counted = Downloads(source, monkeypatch)
    seen: dict[str, str] = {}
    read_all(source, seen)
    assert counted.gets == {"a.csv": 1, "b.csv": 1} and counted.hashed == 2

    for _ in range(3):
        assert source.read_new(seen).description == "no new data"
    put(s3_storage, "incoming/c.csv", b"x\n3\n")
    assert read_all(source, seen).frame["x"].tolist() == ["3"]
    assert counted.gets == {"a.csv": 1, "b.csv": 1, "c.csv": 1} and counted.hashed == 3


def test_a_rewritten_object_is_read_again_and_the_same_bytes_again_are_not_new(
    s3_storage: S3Location, monkeypatch: pytest.MonkeyPatch
) -> None:
    put(s3_storage, "incoming/a.csv", b"x\n1\n")
    source = csv_source(s3_storage)
    counted = Downloads(source, monkeypatch)
    seen: dict[str, str] = {}
    read_all(source, seen)

    put(s3_storage, "incoming/a.csv", b"x\n1\n2\n")
    assert read_all(source, seen).frame["x"].tolist() == ["1", "2"]
    # Uploading the same bytes again makes the same ETag: nothing to download.
    put(s3_storage, "incoming/a.csv", b"x\n1\n2\n")
    assert source.read_new(seen).description == "no new data"
    assert counted.gets == {"a.csv": 2}


def test_a_mark_recorded_without_a_stamp_is_restated_and_the_object_not_read_again(
    s3_storage: S3Location, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = b"x\n1\n"
    put(s3_storage, "incoming/a.csv", data)
    source = csv_source(s3_storage)
    counted = Downloads(source, monkeypatch)
    key = f"file:s3://{s3_storage.bucket}/incoming/a.csv"
    # The mark as refit recorded it before marks carried stamps: the content's sha256 alone.
    seen = {key: hashlib.sha256(data).hexdigest()}

    batch = read_all(source, seen)
    assert batch.description == "no new data" and batch.marks == {}
    assert batch.restated == {key: f"{hashlib.sha256(data).hexdigest()} {len(data)} {etag(data)}"}
    read_all(source, seen)
    assert counted.gets == {"a.csv": 1}


def etag(data: bytes) -> str:
    """The ETag S3 gives an object uploaded in one PUT: the MD5 of its bytes."""
    return hashlib.md5(data).hexdigest()


def test_a_glob_an_object_and_what_a_folder_leaves_out(s3_storage: S3Location) -> None:
    put(s3_storage, "incoming/jan.csv", b"x\n1\n")
    put(s3_storage, "incoming/feb.csv", b"x\n2\n")
    put(s3_storage, "incoming/notes.txt", b"x\n3\n")
    put(s3_storage, "incoming/deeper/mar.csv", b"x\n4\n")
    put(s3_storage, "incoming/apr.csv.part", b"x\n5\n")
    put(s3_storage, "incoming/empty.csv", b"")

    assert csv_source(s3_storage).read_new({}).frame["x"].tolist() == ["2", "1"]
    assert csv_source(s3_storage, "incoming/*.csv").read_new({}).frame["x"].tolist() == ["2", "1"]
    assert csv_source(s3_storage, "incoming/*/*.csv").read_new({}).frame["x"].tolist() == ["4"]
    assert csv_source(s3_storage, "incoming/jan.csv").read_new({}).frame["x"].tolist() == ["1"]
    # A folder given without its trailing slash is still the folder.
    assert csv_source(s3_storage, "incoming").read_new({}).frame["x"].tolist() == ["2", "1"]


def test_parquet_objects(s3_storage: S3Location) -> None:
    buffer = io.BytesIO()
    pd.DataFrame({"x": [1.5, 2.5]}).to_parquet(buffer)
    put(s3_storage, "pq/1.parquet", buffer.getvalue())
    spec = ParquetSource(kind="parquet", path=f"s3://{s3_storage.bucket}/pq/")
    batch = open_source(spec, Path("/nowhere"), options(s3_storage)).read_new({})
    assert batch.frame["x"].tolist() == [1.5, 2.5]


def test_an_empty_prefix_is_no_data_and_a_missing_bucket_an_error(
    s3_storage: S3Location,
) -> None:
    assert csv_source(s3_storage).read_new({}).description == "no new data"
    missing = CsvSource(kind="csv", path="s3://no-such-bucket/incoming/")
    with pytest.raises(SourceError, match="no such bucket 'no-such-bucket'"):
        open_source(missing, Path("/nowhere"), options(s3_storage)).read_new({})


def test_an_object_that_cannot_be_read_is_an_error_naming_its_url(
    s3_storage: S3Location,
) -> None:
    put(s3_storage, "pq/1.parquet", b"not parquet")
    url = f"s3://{s3_storage.bucket}/pq/1.parquet"
    spec = ParquetSource(kind="parquet", path=f"s3://{s3_storage.bucket}/pq/")
    source = open_source(spec, Path("/nowhere"), options(s3_storage))
    with pytest.raises(SourceError, match=rf"^{url}: cannot read it: [^\n]+$"):
        source.read_new({})


def test_without_storage_s3_the_aws_variables_apply(
    s3_storage: S3Location, monkeypatch: pytest.MonkeyPatch
) -> None:
    put(s3_storage, "incoming/a.csv", b"x\n1\n")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_storage.endpoint_url)
    spec = CsvSource(kind="csv", path=f"s3://{s3_storage.bucket}/incoming/")
    assert open_source(spec, Path("/nowhere")).read_new({}).frame["x"].tolist() == ["1"]


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("gs://bucket/incoming/", "gs:// is not supported"),
        ("s3:///incoming/", "with a bucket name"),
        ("s3://Bad_Bucket/x.csv", "with a bucket name"),
        (" ", "expected a file, a folder or a glob"),
    ],
)
def test_a_path_that_is_no_local_path_or_s3_url_is_refused(path: str, expected: str) -> None:
    with pytest.raises(ValidationError, match=expected):
        CsvSource(kind="csv", path=path)
    with pytest.raises(ValidationError, match=expected):
        ParquetSource(kind="parquet", path=path)


# --- ingest ---------------------------------------------------------------------------------


def s3_project(root: Path, location: S3Location) -> Project:
    spec = Spec.model_validate(
        {
            "name": "shop",
            "data": {
                "source": {"kind": "csv", "path": f"s3://{location.bucket}/incoming/"},
                "target": "y",
                "features": {"x": "float"},
            },
            "model": {
                "task": "classification",
                "estimator": "sklearn.linear_model.LogisticRegression",
            },
            "storage": {"s3": options(location).model_dump(mode="json") | secret(location)},
        }
    )
    return Project(root, spec)


def secret(location: S3Location) -> dict[str, str]:
    return {"secret_access_key": location.secret}


def test_ingest_reads_new_objects_with_storage_s3_and_records_restated_marks(
    tmp_path: Path, s3_storage: S3Location, registry: Registry
) -> None:
    project = s3_project(tmp_path, s3_storage)
    store = open_artifact_store(str(tmp_path / "artifacts"))
    data = b"x,y\n1,0\n2,1\n"
    put(s3_storage, "incoming/a.csv", data)
    assert run_ingest(project, registry, store).status == "accepted"
    key = f"file:s3://{s3_storage.bucket}/incoming/a.csv"
    digest = hashlib.sha256(data).hexdigest()
    stamped = f"{digest} {len(data)} {etag(data)}"
    assert registry.source_marks("shop") == {key: stamped}

    # A mark as refit recorded it before it read stamps is brought up to date, unread as rows.
    with registry.write() as s:
        row = s.get(SourceMarkRow, ("shop", key))
        assert row is not None
        row.value = digest
    assert run_ingest(project, registry, store).status == "empty"
    assert registry.source_marks("shop")[key] == stamped

    put(s3_storage, "incoming/b.csv", b"x,y\n3,0\n")
    result = run_ingest(project, registry, store)
    assert result.status == "accepted" and result.snapshot is not None
    assert result.snapshot.row_count == 3
