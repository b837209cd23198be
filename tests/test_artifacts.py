"""The artifact store on a local folder and on a real S3 endpoint (moto server on 127.0.0.1)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from refit.artifacts import ArtifactStore, open_artifact_store
from refit.errors import ArtifactCorruptError, ArtifactError, NotFoundError
from refit.spec import S3Options
from servers import S3Location


def s3_store(location: S3Location) -> ArtifactStore:
    options = S3Options(
        endpoint_url=location.endpoint_url,
        region=location.region,
        access_key_id=location.key,
        secret_access_key=location.secret,  # type: ignore[arg-type]
    )
    return open_artifact_store(location.url, options)


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    if request.param == "local":
        return open_artifact_store(str(tmp_path / "artifacts"))
    return s3_store(request.getfixturevalue("s3_storage"))


def corrupt(store: ArtifactStore, uri: str, data: bytes) -> None:
    """Overwrite a stored file behind the store's back."""
    if hasattr(store, "root"):
        (store.root / uri).write_bytes(data)
    else:
        store.fs.pipe_file(f"{store.url}/{uri}", data)  # type: ignore[attr-defined]


def test_put_is_content_addressed_and_get_verifies(store: ArtifactStore) -> None:
    data = b"model bytes" * 100
    ref = store.put(data, kind="models", suffix=".joblib")
    digest = hashlib.sha256(data).hexdigest()
    assert ref.sha256 == digest
    assert ref.uri == f"models/{digest[:2]}/{digest}.joblib"
    assert ref.size == len(data)
    assert store.exists(ref.uri)
    assert store.get(ref.uri, ref.sha256) == data
    # The same bytes again land on the same key.
    assert store.put(data, kind="models", suffix=".joblib") == ref


def test_a_corrupt_file_is_refused(store: ArtifactStore) -> None:
    ref = store.put(b"the real content", kind="models", suffix=".joblib")
    corrupt(store, ref.uri, b"the real cont")
    with pytest.raises(ArtifactCorruptError, match="corrupt"):
        store.get(ref.uri, ref.sha256)


def test_a_missing_file_is_not_found(store: ArtifactStore) -> None:
    with pytest.raises(NotFoundError, match="missing"):
        store.get("models/00/00.joblib", "0" * 64)
    assert not store.exists("models/00/00.joblib")


def test_local_writes_leave_no_temporary_files(tmp_path: Path) -> None:
    store = open_artifact_store(str(tmp_path))
    store.put(b"x", kind="snapshots", suffix=".parquet")
    names = [p.name for p in tmp_path.rglob("*") if p.is_file()]
    assert len(names) == 1 and not names[0].startswith(".")


def test_local_write_failure_is_an_artifact_error(tmp_path: Path) -> None:
    (tmp_path / "models").write_text("a file where a folder should be")
    store = open_artifact_store(str(tmp_path))
    with pytest.raises(ArtifactError, match="cannot write artifact"):
        store.put(b"x", kind="models", suffix=".joblib")


def test_unsupported_scheme_is_refused() -> None:
    with pytest.raises(ArtifactError, match="unsupported artifact store"):
        open_artifact_store("ftp://example/x")


def test_s3_objects_are_readable_by_a_second_store(s3_storage: S3Location) -> None:
    ref = s3_store(s3_storage).put(b"shared", kind="models", suffix=".joblib")
    assert s3_store(s3_storage).get(ref.uri, ref.sha256) == b"shared"


def test_a_damaged_copy_is_rewritten_by_the_next_put(tmp_path: Path) -> None:
    store = open_artifact_store(str(tmp_path))
    ref = store.put(b"the real content", kind="models", suffix=".joblib")
    corrupt(store, ref.uri, b"the fake content")  # same size, other bytes
    assert store.put(b"the real content", kind="models", suffix=".joblib") == ref
    assert store.get(ref.uri, ref.sha256) == b"the real content"


def test_delete_removes_a_file_and_a_missing_one_is_no_error(store: ArtifactStore) -> None:
    ref = store.put(b"old log", kind="logs", suffix=".parquet")
    store.delete(ref.uri)
    assert not store.exists(ref.uri)
    store.delete(ref.uri)
