"""One ingest run against a real SQLite registry and a local artifact store."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sqlalchemy import update

from refit.artifacts import ArtifactRef, ArtifactStore, open_artifact_store
from refit.data.ingest import run_ingest, snapshot_key
from refit.data.sources import MemorySource
from refit.errors import ArtifactCorruptError, ArtifactError, SourceError
from refit.parquet import from_parquet, read_snapshot
from refit.project import Project
from refit.registry import IngestBatchRow, Registry, open_registry
from refit.spec import Spec

HEADER = "x,n,c,y\n"


def project(root: Path, **data: Any) -> Project:
    """A classification project over `root/incoming/*.csv`; `data` overrides its data section."""
    spec = Spec.model_validate(
        {
            "name": "shop",
            "data": {
                "source": {"kind": "csv", "path": "incoming"},
                "target": "y",
                "features": {
                    "x": "float",
                    "n": {"type": "int", "min": 0},
                    "c": {"type": "category", "values": ["a", "b"]},
                },
                **data,
            },
            "model": {
                "task": "classification",
                "estimator": "sklearn.linear_model.LogisticRegression",
            },
        }
    )
    return Project(root, spec)


def write_csv(root: Path, name: str, rows: str, header: str = HEADER) -> Path:
    path = root / "incoming" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + rows, encoding="utf-8")
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def stored_rejects(store: ArtifactStore, batch: IngestBatchRow | None) -> pd.DataFrame:
    assert batch is not None and batch.rejects_uri is not None and batch.rejects_sha256
    return from_parquet(store.get(batch.rejects_uri, batch.rejects_sha256))


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    registry = open_registry(f"sqlite:///{tmp_path}/r.db")
    yield registry
    registry.close()


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return open_artifact_store(str(tmp_path / "a"))


class FailingStore:
    """A store whose writes of one kind of file fail, as a full disk or a lost bucket would."""

    def __init__(self, inner: ArtifactStore, failing_kind: str) -> None:
        self.inner = inner
        self.url = inner.url
        self.failing_kind = failing_kind

    def put(self, data: bytes, *, kind: str, suffix: str) -> ArtifactRef:
        if kind == self.failing_kind:
            raise ArtifactError(f"cannot write artifact {kind}/...: No space left on device")
        return self.inner.put(data, kind=kind, suffix=suffix)

    def get(self, uri: str, sha256: str) -> bytes:
        return self.inner.get(uri, sha256)

    def exists(self, uri: str) -> bool:
        return self.inner.exists(uri)


# --- accepted, empty, unchanged -------------------------------------------------------------


def test_a_first_file_makes_the_first_snapshot(
    tmp_path: Path, registry: Registry, store: ArtifactStore
) -> None:
    path = write_csv(tmp_path, "a.csv", "1.5,1,a,0\n2.5,2,b,1\n3.5,,a,0\n")
    result = run_ingest(project(tmp_path), registry, store)

    assert result.status == "accepted"
    snapshot = result.snapshot
    assert snapshot is not None
    assert result.message == (
        f"snapshot {snapshot.id[:12]}: 3 rows (3 new) from 1 new file: incoming/a.csv"
    )
    assert snapshot.row_count == 3
    assert snapshot.parent_id is None
    assert snapshot.mode == "cumulative"
    assert snapshot.columns == {"x": "float64", "n": "Int64", "c": "str", "y": "float64"}
    assert snapshot.stats["x"]["mean"] == pytest.approx(2.5)
    assert (snapshot.stats["n"]["count"], snapshot.stats["n"]["nulls"]) == (2, 1)
    assert snapshot.stats["c"]["frequencies"] == {"a": 2, "b": 1}

    rows = read_snapshot(store, snapshot)
    expected = pd.DataFrame(
        {
            "x": [1.5, 2.5, 3.5],
            "n": pd.array([1, 2, None], dtype="Int64"),
            "c": pd.Series(["a", "b", "a"], dtype="str"),
            "y": [0.0, 1.0, 0.0],
        }
    )
    pd.testing.assert_frame_equal(rows, expected)
    assert snapshot.id == snapshot_key("shop", rows)
    assert store.exists(snapshot.uri)

    assert registry.source_marks("shop") == {"file:incoming/a.csv": sha256(path)}
    [batch] = registry.list_batches("shop")
    assert (batch.status, batch.snapshot_id) == ("accepted", snapshot.id)
    assert (batch.rows_read, batch.rows_valid, batch.rows_rejected) == (3, 3, 0)
    assert batch.rejects_uri is None
    assert registry.latest_snapshot("shop") is not None


def test_nothing_new_records_nothing(
    tmp_path: Path, registry: Registry, store: ArtifactStore
) -> None:
    write_csv(tmp_path, "a.csv", "1.5,1,a,0\n")
    spec = project(tmp_path)
    first = run_ingest(spec, registry, store)

    again = run_ingest(spec, registry, store)
    assert (again.status, again.message) == ("empty", "no new data")
    assert again.batch is None and again.snapshot is None
    assert len(registry.list_batches("shop")) == 1
    latest = registry.latest_snapshot("shop")
    assert first.snapshot is not None and latest is not None
    assert latest.id == first.snapshot.id


def test_an_empty_folder_is_no_new_data(
    tmp_path: Path, registry: Registry, store: ArtifactStore
) -> None:
    (tmp_path / "incoming").mkdir()
    assert run_ingest(project(tmp_path), registry, store).status == "empty"
    assert registry.list_batches("shop") == []


def test_a_missing_source_folder_is_a_source_error(
    tmp_path: Path, registry: Registry, store: ArtifactStore
) -> None:
    with pytest.raises(SourceError, match=r"incoming: no such file or folder"):
        run_ingest(project(tmp_path), registry, store)


def test_a_second_file_extends_a_cumulative_snapshot(
    tmp_path: Path, registry: Registry, store: ArtifactStore
) -> None:
    spec = project(tmp_path)
    write_csv(tmp_path, "a.csv", "1.5,1,a,0\n2.5,2,b,1\n")
    first = run_ingest(spec, registry, store)
    write_csv(tmp_path, "b.csv", "3.5,3,b,1\n")
    second = run_ingest(spec, registry, store)

    assert second.status == "accepted"
    assert first.snapshot is not None and second.snapshot is not None
    assert second.snapshot.id != first.snapshot.id
    assert second.snapshot.parent_id == first.snapshot.id
    assert second.snapshot.row_count == 3
    assert second.message.endswith(": 3 rows (1 new) from 1 new file: incoming/b.csv")
    assert read_snapshot(store, second.snapshot)["x"].tolist() == [1.5, 2.5, 3.5]
    # The first snapshot is immutable: still there, still whole.
    assert read_snapshot(store, first.snapshot)["x"].tolist() == [1.5, 2.5]
    assert [b.snapshot_id for b in registry.list_batches("shop")] == [
        second.snapshot.id,
        first.snapshot.id,
    ]


def test_the_same_rows_again_in_latest_mode_are_unchanged(
    tmp_path: Path, registry: Registry, store: ArtifactStore
) -> None:
    spec = project(tmp_path, snapshot={"mode": "latest"})
    write_csv(tmp_path, "a.csv", "1.5,1,a,0\n2.5,2,b,1\n")
    first = run_ingest(spec, registry, store)
    write_csv(tmp_path, "b.csv", "1.5,1,a,0\n2.5,2,b,1\n")
    again = run_ingest(spec, registry, store)

    assert again.status == "unchanged"
    assert again.message == (
        "1 new file: incoming/b.csv: the data is the same as the latest snapshot"
    )
    assert first.snapshot is not None and again.snapshot is not None
    assert again.snapshot.id == first.snapshot.id
    assert again.batch is not None
    assert (again.batch.status, again.batch.snapshot_id) == ("unchanged", first.snapshot.id)
    assert len(registry.list_snapshots("shop")) == 1
    assert "file:incoming/b.csv" in registry.source_marks("shop")
    assert run_ingest(spec, registry, store).status == "empty"


def test_data_returning_to_an_older_snapshot_points_at_it(
    tmp_path: Path, registry: Registry, store: ArtifactStore
) -> None:
    spec = project(tmp_path, snapshot={"mode": "latest"})
    write_csv(tmp_path, "export.csv", "1.5,1,a,0\n")
    first = run_ingest(spec, registry, store)
    write_csv(tmp_path, "export.csv", "9.5,9,b,1\n")
    second = run_ingest(spec, registry, store)
    write_csv(tmp_path, "export.csv", "1.5,1,a,0\n")
    third = run_ingest(spec, registry, store)

    assert [first.status, second.status, third.status] == ["accepted"] * 3
    assert first.snapshot is not None and second.snapshot is not None
    assert third.snapshot is not None
    assert third.snapshot.id == first.snapshot.id != second.snapshot.id
    assert len(registry.list_snapshots("shop")) == 2
    latest = registry.latest_snapshot("shop")
    assert latest is not None and latest.id == first.snapshot.id


def test_a_file_of_only_a_header_is_consumed_without_a_snapshot(
    tmp_path: Path, registry: Registry, store: ArtifactStore
) -> None:
    write_csv(tmp_path, "a.csv", "")
    result = run_ingest(project(tmp_path), registry, store)
    assert (result.status, result.message) == (
        "unchanged",
        "1 new file: incoming/a.csv: no valid rows",
    )
    assert result.snapshot is None
    assert registry.list_snapshots("shop") == []
    assert run_ingest(project(tmp_path), registry, store).status == "empty"


def test_a_window_of_rows_keeps_the_last_ones(
    tmp_path: Path, registry: Registry, store: ArtifactStore
) -> None:
    spec = project(tmp_path, snapshot={"mode": "window", "rows": 3})
    source = MemorySource()
    source.put("a", pd.DataFrame({"x": [1.0, 2.0], "n": [1, 2], "c": ["a", "b"], "y": [0, 1]}))
    first = run_ingest(spec, registry, store, source)
    source.put("b", pd.DataFrame({"x": [3.0, 4.0], "n": [3, 4], "c": ["a", "a"], "y": [1, 0]}))
    second = run_ingest(spec, registry, store, source)

    assert first.snapshot is not None and second.snapshot is not None
    assert (second.snapshot.mode, second.snapshot.row_count) == ("window", 3)
    assert second.snapshot.parent_id == first.snapshot.id
    assert second.message.endswith(": 3 rows (2 new) from 1 new file: b")
    assert read_snapshot(store, second.snapshot)["x"].tolist() == [2.0, 3.0, 4.0]
    assert set(registry.source_marks("shop")) == {"memory:a", "memory:b"}


# --- rejects and refused batches ------------------------------------------------------------


def test_a_few_bad_rows_are_kept_aside_with_their_reasons(
    tmp_path: Path, registry: Registry, store: ArtifactStore
) -> None:
    write_csv(tmp_path, "a.csv", "1.5,1,a,0\nlots,2,b,1\n3.5,3,a,0\n4.5,4,b,1\n5.5,-5,z,0\n")
    result = run_ingest(project(tmp_path, max_reject_rate=0.5), registry, store)

    assert result.status == "accepted"
    assert result.snapshot is not None and result.batch is not None
    assert result.message.endswith(": 3 rows (3 new, 2 rejected) from 1 new file: incoming/a.csv")
    assert result.snapshot.row_count == 3
    assert read_snapshot(store, result.snapshot)["x"].tolist() == [1.5, 3.5, 4.5]
    assert (result.batch.rows_read, result.batch.rows_valid, result.batch.rows_rejected) == (
        5,
        3,
        2,
    )
    rejects = stored_rejects(store, result.batch)
    assert rejects.to_dict("list") == {
        "x": ["lots", "5.5"],
        "n": ["2", "-5"],
        "c": ["b", "z"],
        "y": ["1", "0"],
        "_row": [1, 4],
        "_reason": [
            "x: 'lots' is not a number",
            "n: '-5' is below the minimum 0; c: 'z' is not one of the allowed values: a, b",
        ],
        "_file": ["incoming/a.csv", "incoming/a.csv"],
        "_line": [3, 6],
    }


def test_too_many_bad_rows_refuse_the_batch_and_later_files_still_flow(
    tmp_path: Path, registry: Registry, store: ArtifactStore
) -> None:
    spec = project(tmp_path, max_reject_rate=0.25)
    write_csv(tmp_path, "a.csv", "1.5,1,a,0\nlots,2,b,1\n3.5,3,a,0\n")
    refused = run_ingest(spec, registry, store)

    reason = (
        "1 of 3 rows (33%) failed validation, more than data.max_reject_rate (25%); "
        "first: incoming/a.csv line 3: x: 'lots' is not a number"
    )
    assert refused.status == "refused"
    assert refused.message == f"1 new file: incoming/a.csv refused: {reason}"
    assert refused.snapshot is None
    assert refused.batch is not None
    assert (refused.batch.status, refused.batch.reason) == ("refused", reason)
    assert (refused.batch.rows_read, refused.batch.rows_rejected) == (3, 3)
    assert registry.list_snapshots("shop") == []
    assert registry.latest_snapshot("shop") is None
    assert "file:incoming/a.csv" in registry.source_marks("shop")
    # Every row of the refused batch is kept, so none is lost: the bad one with its reason.
    rejects = stored_rejects(store, refused.batch)
    assert rejects["x"].tolist() == ["1.5", "lots", "3.5"]
    assert rejects["_row"].tolist() == [0, 1, 2]
    assert rejects["_reason"].tolist() == [
        "valid, but its batch was refused",
        "x: 'lots' is not a number",
        "valid, but its batch was refused",
    ]

    write_csv(tmp_path, "b.csv", "7.5,7,b,1\n")
    accepted = run_ingest(spec, registry, store)
    assert accepted.status == "accepted"
    assert accepted.batch is not None and accepted.snapshot is not None
    assert (accepted.batch.rows_read, accepted.snapshot.row_count) == (1, 1)
    assert accepted.snapshot.parent_id is None
    assert stored_rejects(store, refused.batch)["x"].tolist() == ["1.5", "lots", "3.5"]


def test_a_file_without_a_required_column_is_refused_naming_it(
    tmp_path: Path, registry: Registry, store: ArtifactStore
) -> None:
    write_csv(tmp_path, "a.csv", "1.5,a,0\n2.5,b,1\n", header="x,c,y\n")
    result = run_ingest(project(tmp_path), registry, store)

    reason = "the batch has no column 'n' (required by the spec); its columns are: x, c, y"
    assert result.status == "refused"
    assert result.message == f"1 new file: incoming/a.csv refused: {reason}"
    assert result.batch is not None and result.batch.reason == reason
    assert registry.list_snapshots("shop") == []
    rejects = stored_rejects(store, result.batch)
    assert rejects.to_dict("list") == {
        "x": ["1.5", "2.5"],
        "c": ["a", "b"],
        "y": ["0", "1"],
        "_row": [0, 1],
        "_reason": [reason, reason],
        "_file": ["incoming/a.csv", "incoming/a.csv"],
        "_line": [2, 3],
    }
    assert run_ingest(project(tmp_path), registry, store).status == "empty"


def test_a_malformed_line_is_a_rejected_row_with_its_file_and_line(
    tmp_path: Path, registry: Registry, store: ArtifactStore
) -> None:
    path = write_csv(tmp_path, "a.csv", "")
    path.write_bytes(HEADER.encode() + b"1.5,1,a,0\n2.5,2,b\n3.5,3,caf\xe9,1\n4.5,4,a,1\n")
    result = run_ingest(project(tmp_path, max_reject_rate=0.5), registry, store)

    assert result.status == "accepted", result.message
    assert result.snapshot is not None and result.batch is not None
    assert read_snapshot(store, result.snapshot)["x"].tolist() == [1.5, 4.5]
    assert (result.batch.rows_read, result.batch.rows_valid, result.batch.rows_rejected) == (
        4,
        2,
        2,
    )
    rejects = stored_rejects(store, result.batch)
    assert rejects[["_file", "_line", "_reason"]].values.tolist() == [
        ["incoming/a.csv", 3, "3 fields where the header has 4"],
        ["incoming/a.csv", 4, "the line holds bytes that are not utf-8 text"],
    ]


def test_malformed_lines_count_against_the_reject_rate(
    tmp_path: Path, registry: Registry, store: ArtifactStore
) -> None:
    write_csv(tmp_path, "a.csv", "1.5,1,a,0\n2.5,2\n3.5,3,a,1,9\n")
    result = run_ingest(project(tmp_path, max_reject_rate=0.5), registry, store)
    assert result.status == "refused"
    assert result.batch is not None and result.batch.reason == (
        "2 of 3 rows (67%) failed validation, more than data.max_reject_rate (50%); "
        "first: incoming/a.csv line 3: 2 fields where the header has 4"
    )
    assert (result.batch.rows_read, result.batch.rows_rejected) == (3, 3)
    rejects = stored_rejects(store, result.batch)
    assert rejects["_line"].tolist() == [2, 3, 4]
    assert rejects["_reason"].tolist()[0] == "valid, but its batch was refused"


def test_a_csv_dialect_with_a_decimal_comma(
    tmp_path: Path, registry: Registry, store: ArtifactStore
) -> None:
    write_csv(tmp_path, "a.csv", "1,5;1;a;0\n-;2;b;1\n", header="x;n;c;y\n")
    source = {
        "kind": "csv",
        "path": "incoming",
        "delimiter": ";",
        "decimal": ",",
        "na_values": ["-"],
    }
    result = run_ingest(project(tmp_path, source=source), registry, store)
    assert result.snapshot is not None, result.message
    x = read_snapshot(store, result.snapshot)["x"]
    assert x.isna().tolist() == [False, True] and x.iloc[0] == 1.5


# --- the artifact store ---------------------------------------------------------------------


def test_an_altered_snapshot_file_is_refused_on_read(
    tmp_path: Path, registry: Registry, store: ArtifactStore
) -> None:
    write_csv(tmp_path, "a.csv", "1.5,1,a,0\n")
    snapshot = run_ingest(project(tmp_path), registry, store).snapshot
    assert snapshot is not None
    path = tmp_path / "a" / snapshot.uri
    path.write_bytes(path.read_bytes()[:-1] + b"\0")

    with pytest.raises(ArtifactCorruptError, match=r"is corrupt: its sha256 is .* Refusing"):
        read_snapshot(store, snapshot)
    write_csv(tmp_path, "b.csv", "2.5,2,b,1\n")
    with pytest.raises(ArtifactCorruptError):
        run_ingest(project(tmp_path), registry, store)


@pytest.mark.parametrize("failing_kind", ["snapshots", "rejects"])
def test_a_failed_write_to_the_store_records_nothing(
    tmp_path: Path, registry: Registry, store: ArtifactStore, failing_kind: str
) -> None:
    spec = project(tmp_path, max_reject_rate=0.5)
    write_csv(tmp_path, "a.csv", "1.5,1,a,0\nlots,2,b,1\n3.5,3,a,0\n")

    with pytest.raises(ArtifactError, match="No space left on device"):
        run_ingest(spec, registry, FailingStore(store, failing_kind))
    assert registry.list_batches("shop") == []
    assert registry.list_snapshots("shop") == []
    assert registry.source_marks("shop") == {}

    # Nothing was consumed: the next run reads the same rows again.
    retried = run_ingest(spec, registry, store)
    assert retried.status == "accepted"
    assert retried.snapshot is not None and retried.snapshot.row_count == 2


# --- schema changes and shared registries ---------------------------------------------------


def test_a_changed_schema_rebuilds_from_every_batch_and_the_new_one(
    tmp_path: Path, registry: Registry, store: ArtifactStore
) -> None:
    write_csv(tmp_path, "a.csv", "1.5,1,a,0,7\n2.5,2,b,1,8\n", header="x,n,c,y,w\n")
    first = run_ingest(project(tmp_path), registry, store)
    write_csv(tmp_path, "b.csv", "3.5,3,a,1\n")  # read with c.csv: its w is missing
    write_csv(tmp_path, "c.csv", "4.5,4,b,0,9\n", header="x,n,c,y,w\n")
    wider = project(tmp_path, features={"x": "float", "n": "int", "c": "category", "w": "float"})
    second = run_ingest(wider, registry, store)

    assert first.snapshot is not None
    assert second.status == "rebuilt" and second.snapshot is not None, second.message
    assert second.message == (
        f"the spec's columns changed since snapshot {first.snapshot.id[:12]} (added: w): "
        f"snapshot {second.snapshot.id[:12]} rebuilt with 4 rows from the rows of 1 batch read "
        "before and kept in the artifact store (1 new file: incoming/a.csv), and 2 new files: "
        "incoming/b.csv, incoming/c.csv"
    )
    assert second.snapshot.parent_id == first.snapshot.id
    frame = read_snapshot(store, second.snapshot)
    assert list(frame.columns) == ["x", "n", "c", "w", "y"]
    assert frame["w"].fillna(0).tolist() == [7.0, 8.0, 0.0, 9.0]
    # The new files are consumed, and their rows kept for the next rebuild.
    assert run_ingest(wider, registry, store).status == "empty"
    [rebuilt, first_batch] = registry.list_batches("shop")
    assert (rebuilt.status, rebuilt.reason) == ("rebuilt", second.message.split(": snapshot ")[0])
    assert first_batch.status == "accepted"
    assert rebuilt.rows_uri is not None and rebuilt.rows_sha256 is not None
    kept = from_parquet(store.get(rebuilt.rows_uri, rebuilt.rows_sha256))
    assert kept["w"].isna().tolist() == [True, False] and kept["x"].tolist() == [
        "3.5",
        "4.5",
    ]  # as read: text


def test_every_batch_keeps_its_rows_as_read(
    tmp_path: Path, registry: Registry, store: ArtifactStore
) -> None:
    write_csv(tmp_path, "a.csv", "1.5,1,a,0,extra\n", header="x,n,c,y,note\n")
    accepted = run_ingest(project(tmp_path), registry, store)
    write_csv(tmp_path, "b.csv", "oops,1,a,0\n")
    refused = run_ingest(project(tmp_path), registry, store)
    assert (accepted.status, refused.status) == ("accepted", "refused")
    for result, expected in ((accepted, ["1.5", "1", "a", "0", "extra"]), (refused, None)):
        batch = result.batch
        assert batch is not None and batch.rows_uri is not None and batch.rows_sha256
        kept = from_parquet(store.get(batch.rows_uri, batch.rows_sha256))
        if expected is not None:
            assert list(kept.columns) == ["x", "n", "c", "y", "note"]
            assert [str(v) for v in kept.iloc[0]] == expected
        else:
            assert kept["x"].tolist() == ["oops"]


def test_a_column_of_mixed_values_is_kept_as_text(
    tmp_path: Path, registry: Registry, store: ArtifactStore
) -> None:
    source = MemorySource()
    rows = {"x": [1.5, 2.5], "n": [1, 2], "c": ["a", "b"], "y": [0, 1], "note": [7, "seven"]}
    source.put("a", pd.DataFrame(rows))  # as a SQL source may give an untyped column
    result = run_ingest(project(tmp_path), registry, store, source)
    assert result.status == "accepted" and result.batch is not None
    assert result.batch.rows_uri is not None and result.batch.rows_sha256 is not None
    kept = from_parquet(store.get(result.batch.rows_uri, result.batch.rows_sha256))
    assert kept["note"].tolist() == ["7", "seven"] and kept["x"].tolist() == [1.5, 2.5]


def test_a_batch_refused_under_the_old_spec_joins_the_rebuild_when_it_fits_the_new_one(
    tmp_path: Path, registry: Registry, store: ArtifactStore
) -> None:
    write_csv(tmp_path, "a.csv", "1.5,1,a,0\n2.5,2,b,1\n")
    run_ingest(project(tmp_path), registry, store)
    write_csv(tmp_path, "b.csv", "3.5,a,1\n", header="x,c,y\n")  # no n: refused
    assert run_ingest(project(tmp_path), registry, store).status == "refused"

    narrower = project(tmp_path, features={"x": "float", "c": "category"})
    result = run_ingest(narrower, registry, store)
    assert result.status == "rebuilt" and result.snapshot is not None, result.message
    assert "(removed: n)" in result.message and "rebuilt with 3 rows" in result.message
    assert read_snapshot(store, result.snapshot)["x"].tolist() == [1.5, 2.5, 3.5]


def test_batches_ingested_before_rows_were_kept_are_read_again_from_the_source(
    tmp_path: Path, registry: Registry, store: ArtifactStore
) -> None:
    write_csv(tmp_path, "a.csv", "1.5,1,a,0,7\n", header="x,n,c,y,w\n")
    run_ingest(project(tmp_path), registry, store)
    write_csv(tmp_path, "b.csv", "2.5,2,b,1,8\n", header="x,n,c,y,w\n")
    run_ingest(project(tmp_path), registry, store)
    with registry.write() as s:  # as a registry of an earlier refit holds them
        s.execute(update(IngestBatchRow).values(rows_uri=None, rows_sha256=None))

    wider = project(tmp_path, features={"x": "float", "n": "int", "c": "category", "w": "float"})
    result = run_ingest(wider, registry, store)
    assert result.status == "rebuilt" and result.snapshot is not None, result.message
    assert result.message.endswith(
        "rebuilt with 2 rows from the source read again from the start (2 batches ingested "
        "before refit kept the rows it reads): 2 new files: incoming/a.csv, incoming/b.csv"
    )
    assert read_snapshot(store, result.snapshot)["w"].tolist() == [7.0, 8.0]

    # Once the files are gone too, nothing is left to rebuild from: the snapshot stays.
    for name in ("a.csv", "b.csv"):
        (tmp_path / "incoming" / name).unlink()
    with registry.write() as s:
        s.execute(update(IngestBatchRow).values(rows_uri=None, rows_sha256=None))
    narrower = project(tmp_path, features={"x": "float", "n": "int"})
    gone = run_ingest(narrower, registry, store)
    assert (gone.status, gone.snapshot) == ("refused", None)
    assert gone.message.endswith(
        "cannot rebuild the snapshot: 2 batches ingested before refit kept the rows it reads, "
        "and the source is empty"
    )
    latest = registry.latest_snapshot("shop")
    assert latest is not None and latest.id == result.snapshot.id


def test_a_rebuild_with_nothing_read_yet_is_empty(
    tmp_path: Path, registry: Registry, store: ArtifactStore
) -> None:
    (tmp_path / "incoming").mkdir()
    result = run_ingest(project(tmp_path), registry, store, rebuild=True)
    assert result.status == "empty"
    assert (
        result.message
        == "refit ingest --rebuild: no data was read yet, so there is nothing to rebuild"
    )


def test_a_target_read_as_text_in_one_batch_joins_a_numeric_one(
    tmp_path: Path, registry: Registry, store: ArtifactStore
) -> None:
    write_csv(tmp_path, "a.csv", "1.5,1,a,0\n2.5,2,b,1\n")
    run_ingest(project(tmp_path), registry, store)
    write_csv(tmp_path, "b.csv", "3.5,3,a,maybe\n")
    result = run_ingest(project(tmp_path), registry, store)
    assert result.status == "accepted" and result.snapshot is not None
    assert read_snapshot(store, result.snapshot)["y"].tolist() == ["0", "1", "maybe"]


def test_two_projects_with_the_same_rows_keep_their_own_snapshots(
    tmp_path: Path, registry: Registry, store: ArtifactStore
) -> None:
    write_csv(tmp_path, "a.csv", "1.5,1,a,0\n2.5,2,b,1\n")
    shop = run_ingest(project(tmp_path), registry, store)
    other = Project(tmp_path, project(tmp_path).spec.model_copy(update={"name": "other"}))
    copy = run_ingest(other, registry, store)
    assert shop.snapshot is not None and copy.snapshot is not None
    assert shop.snapshot.id != copy.snapshot.id
    assert [s.id for s in registry.list_snapshots("other")] == [copy.snapshot.id]
    assert shop.snapshot.sha256 == copy.snapshot.sha256  # one file in the store serves both


def test_a_rebuild_drops_duplicates_as_ingest_does(
    tmp_path: Path, registry: Registry, store: ArtifactStore
) -> None:
    write_csv(tmp_path, "a.csv", "1.5,1,a,0\n1.5,1,a,0\n2.5,2,b,1\n")
    dedup = project(tmp_path, drop_duplicates=True)
    first = run_ingest(dedup, registry, store)
    assert first.snapshot is not None and first.snapshot.row_count == 2, first.message

    again = run_ingest(dedup, registry, store, rebuild=True)
    assert again.status == "unchanged", again.message  # the same 2 rows, not 3
