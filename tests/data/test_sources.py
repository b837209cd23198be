import hashlib
import json
import os
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa
from pydantic import SecretStr, ValidationError

from refit.data import sources
from refit.data.sources import Batch, FileSource, MemorySource, QuerySource, open_source
from refit.errors import SourceError
from refit.spec import CsvSource, ParquetSource, SqlSource


def write_csv(path: Path, rows: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(rows, encoding="utf-8")
    return path


def csv_source(root: Path, path: str = "incoming") -> FileSource:
    source = open_source(CsvSource(kind="csv", path=path), root)
    assert isinstance(source, FileSource)
    return source


def read_all(source: FileSource | QuerySource | MemorySource, seen: dict[str, str]) -> Batch:
    """Read new rows and commit their marks, as the ingest role does."""
    batch = source.read_new(seen)
    seen.update(batch.restated)
    seen.update(batch.marks)
    return batch


# --- csv and parquet files ------------------------------------------------------------------


def test_a_folder_is_read_file_by_file_and_each_file_once(tmp_path: Path) -> None:
    write_csv(tmp_path / "incoming/b.csv", "x,y\n3,c\n")
    write_csv(tmp_path / "incoming/a.csv", "x,y\n1,a\n2,b\n")
    source = csv_source(tmp_path)
    seen: dict[str, str] = {}

    first = read_all(source, seen)
    assert first.frame.to_dict("list") == {"x": ["1", "2", "3"], "y": ["a", "b", "c"]}
    assert sorted(first.marks) == ["file:incoming/a.csv", "file:incoming/b.csv"]
    assert first.description == "2 new files: incoming/a.csv, incoming/b.csv"

    again = source.read_new(seen)
    assert again.frame.empty and again.marks == {} and again.description == "no new data"

    write_csv(tmp_path / "incoming/c.csv", "x,y\n4,d\n")
    third = read_all(source, seen)
    assert third.frame["x"].tolist() == ["4"]
    assert list(third.marks) == ["file:incoming/c.csv"]


def test_a_changed_file_is_read_again_whole(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "incoming/a.csv", "x\n1\n")
    source = csv_source(tmp_path)
    seen: dict[str, str] = {}
    read_all(source, seen)
    path.write_text("x\n1\n2\n", encoding="utf-8")
    batch = read_all(source, seen)
    assert batch.frame["x"].tolist() == ["1", "2"]
    assert batch.description == "1 new file: incoming/a.csv"


def settle(path: Path, seconds_ago: float = 60) -> None:
    """Date the file's modification a while back, as for a file written at an earlier tick."""
    then = time.time_ns() - int(seconds_ago * 1e9)
    os.utime(path, ns=(then, then))


def test_a_mark_is_the_sha256_of_the_content_its_size_and_modification_time(
    tmp_path: Path,
) -> None:
    path = write_csv(tmp_path / "incoming/a.csv", "x\n1\n")
    settle(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    batch = csv_source(tmp_path).read_new({})
    stamp = path.stat().st_mtime_ns
    assert batch.marks == {"file:incoming/a.csv": f"{digest} 4 {stamp}"}


def test_a_file_modified_just_now_is_marked_by_its_sha256_alone(tmp_path: Path) -> None:
    # Its next change may come within the clock's resolution: it is hashed again next time.
    path = write_csv(tmp_path / "incoming/a.csv", "x\n1\n")
    batch = csv_source(tmp_path).read_new({})
    assert batch.marks == {"file:incoming/a.csv": hashlib.sha256(path.read_bytes()).hexdigest()}


class Reads:
    """Counts the files read and the contents hashed."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.files: Counter[str] = Counter()
        self.hashed = 0
        read_bytes = Path.read_bytes

        def counted_read_bytes(path: Path) -> bytes:
            self.files[path.name] += 1
            return read_bytes(path)

        def counted_sha256(data: bytes) -> Any:
            self.hashed += 1
            return hashlib.sha256(data)

        monkeypatch.setattr(Path, "read_bytes", counted_read_bytes)
        monkeypatch.setattr(sources, "hashlib", type("hashlib", (), {"sha256": counted_sha256}))


def test_unchanged_files_are_neither_read_nor_hashed_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settle(write_csv(tmp_path / "incoming/a.csv", "x\n1\n"))
    settle(write_csv(tmp_path / "incoming/b.csv", "x\n2\n"))
    source = csv_source(tmp_path)
    counted = Reads(monkeypatch)
    seen: dict[str, str] = {}
    read_all(source, seen)
    assert counted.files == {"a.csv": 1, "b.csv": 1} and counted.hashed == 2

    for _ in range(3):
        assert source.read_new(seen).description == "no new data"
    settle(write_csv(tmp_path / "incoming/c.csv", "x\n3\n"))
    assert read_all(source, seen).frame["x"].tolist() == ["3"]
    assert counted.files == {"a.csv": 1, "b.csv": 1, "c.csv": 1} and counted.hashed == 3


def test_a_touched_file_is_hashed_once_and_not_read_as_new_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_csv(tmp_path / "incoming/a.csv", "x\n1\n")
    settle(path, 120)
    source = csv_source(tmp_path)
    counted = Reads(monkeypatch)
    seen: dict[str, str] = {}
    read_all(source, seen)

    settle(path, 60)
    touched = read_all(source, seen)
    assert touched.description == "no new data" and touched.marks == {}
    assert touched.restated == {"file:incoming/a.csv": seen["file:incoming/a.csv"]}
    assert seen["file:incoming/a.csv"].endswith(f" {path.stat().st_mtime_ns}")
    assert source.read_new(seen).description == "no new data"
    assert counted.files == {"a.csv": 2} and counted.hashed == 2


def test_a_mark_recorded_before_marks_had_stamps_is_restated_without_new_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_csv(tmp_path / "incoming/a.csv", "x\n1\n")
    settle(path)
    old = {"file:incoming/a.csv": hashlib.sha256(path.read_bytes()).hexdigest()}
    source = csv_source(tmp_path)
    counted = Reads(monkeypatch)

    batch = source.read_new(old)
    assert batch.description == "no new data" and batch.marks == {}
    stamped = f"{old['file:incoming/a.csv']} 4 {path.stat().st_mtime_ns}"
    assert batch.restated == {"file:incoming/a.csv": stamped}
    assert source.read_new(batch.restated).description == "no new data"
    assert counted.files == {"a.csv": 1}


def test_a_file_rewritten_with_the_same_size_is_read_again(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "incoming/a.csv", "x\n1\n")
    settle(path, 120)
    source = csv_source(tmp_path)
    seen: dict[str, str] = {}
    read_all(source, seen)
    path.write_text("x\n2\n", encoding="utf-8")
    settle(path, 60)
    assert read_all(source, seen).frame["x"].tolist() == ["2"]


def test_a_glob_matches_files_relative_to_the_root(tmp_path: Path) -> None:
    write_csv(tmp_path / "data/jan.csv", "x\n1\n")
    write_csv(tmp_path / "data/feb.csv", "x\n2\n")
    write_csv(tmp_path / "data/notes.txt", "x\n3\n")
    batch = csv_source(tmp_path, "data/*.csv").read_new({})
    assert batch.frame["x"].tolist() == ["2", "1"]  # sorted: feb before jan


def test_a_glob_without_matches_is_no_new_data(tmp_path: Path) -> None:
    batch = csv_source(tmp_path, "nowhere/*.csv").read_new({})
    assert batch.frame.empty and batch.marks == {} and batch.description == "no new data"


def test_a_folder_reads_only_its_own_kind_of_file_and_not_subfolders(tmp_path: Path) -> None:
    write_csv(tmp_path / "incoming/a.csv", "x\n1\n")
    write_csv(tmp_path / "incoming/a.json", "{}")
    write_csv(tmp_path / "incoming/deeper/b.csv", "x\n2\n")
    assert list(csv_source(tmp_path).read_new({}).marks) == ["file:incoming/a.csv"]


def test_files_being_written_are_skipped(tmp_path: Path) -> None:
    write_csv(tmp_path / "incoming/a.csv", "x\n1\n")
    for name in (".a.csv", "~a.csv", "b.csv.tmp", "c.csv.part"):
        write_csv(tmp_path / "incoming" / name, "x\n99\n")
    (tmp_path / "incoming/empty.csv").touch()
    source = csv_source(tmp_path)
    assert list(source.read_new({}).marks) == ["file:incoming/a.csv"]
    assert list(csv_source(tmp_path, "incoming/*").read_new({}).marks) == ["file:incoming/a.csv"]


def test_an_empty_file_is_read_once_it_has_content(tmp_path: Path) -> None:
    path = tmp_path / "incoming/a.csv"
    write_csv(path, "")
    source = csv_source(tmp_path)
    seen: dict[str, str] = {}
    assert read_all(source, seen).marks == {}
    path.write_text("x\n5\n", encoding="utf-8")
    assert read_all(source, seen).frame["x"].tolist() == ["5"]


def test_one_explicit_file_and_an_absolute_path(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "elsewhere/data.csv", "x;y\n1;2\n")
    source = open_source(CsvSource(kind="csv", path=str(path), delimiter=";"), tmp_path / "proj")
    batch = source.read_new({})
    assert batch.frame.to_dict("list") == {"x": ["1"], "y": ["2"]}
    assert list(batch.marks) == [f"file:{path.as_posix()}"]


def test_an_empty_field_is_missing_and_other_text_is_kept_as_written(tmp_path: Path) -> None:
    write_csv(tmp_path / "incoming/a.csv", "x,y,z\n,NA,007\n1.5,n/a,1e20\n")
    frame = csv_source(tmp_path).read_new({}).frame
    assert frame["x"].isna().tolist() == [True, False]
    assert frame["y"].tolist() == ["NA", "n/a"]
    assert frame["z"].tolist() == ["007", "1e20"]


def test_a_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError) as caught:
        csv_source(tmp_path, "data/train.csv").read_new({})
    message = str(caught.value)
    assert str(tmp_path / "data/train.csv") in message
    assert "no such file or folder" in message


def test_a_missing_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"incoming: no such file or folder"):
        csv_source(tmp_path).read_new({})


def test_a_malformed_line_is_set_aside_with_its_line_number(tmp_path: Path) -> None:
    write_csv(tmp_path / "incoming/a.csv", "x,y\n1,2\n3,4,5,6\n\n7,8\n9\n")
    batch = csv_source(tmp_path).read_new({})
    assert batch.frame.to_dict("list") == {"x": ["1", "7"], "y": ["2", "8"]}
    assert batch.origins is not None and batch.malformed is not None
    assert batch.origins.to_dict("list") == {
        "_file": ["incoming/a.csv"] * 2,
        "_line": [2, 5],
    }
    assert batch.malformed.to_dict("list") == {
        "_file": ["incoming/a.csv"] * 2,
        "_line": [3, 6],
        "_reason": ["4 fields where the header has 2", "1 fields where the header has 2"],
        "_text": ["3,4,5,6", "9"],
    }


def test_a_line_with_undecodable_bytes_is_set_aside(tmp_path: Path) -> None:
    path = tmp_path / "incoming/a.csv"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"x,y\n1,caf\xc3\xa9\n2,caf\xe9\n3,ok\n")
    batch = csv_source(tmp_path).read_new({})
    assert batch.frame.to_dict("list") == {"x": ["1", "3"], "y": ["caf\u00e9", "ok"]}
    assert batch.malformed is not None
    assert batch.malformed[["_line", "_reason", "_text"]].values.tolist() == [
        [3, "the line holds bytes that are not utf-8 text", "2,caf\\udce9"]
    ]


def test_a_quoted_field_spans_lines_and_lines_count_from_where_a_row_starts(
    tmp_path: Path,
) -> None:
    write_csv(tmp_path / "incoming/a.csv", 'x,y\n1,"two\nlines"\n3,4,5\n')
    batch = csv_source(tmp_path).read_new({})
    assert batch.frame["y"].tolist() == ["two\nlines"]
    assert batch.malformed is not None and batch.malformed["_line"].tolist() == [4]


def test_the_csv_dialect_is_the_sources(tmp_path: Path) -> None:
    path = tmp_path / "incoming/a.csv"
    path.parent.mkdir(parents=True)
    path.write_bytes("x;y;z\n1,5;'a;b';n/a\n-;caf\u00e9;\n".encode("latin-1"))
    spec = CsvSource(
        kind="csv",
        path="incoming",
        delimiter=";",
        quotechar="'",
        decimal=",",
        encoding="latin-1",
        na_values=["n/a", "-"],
    )
    frame = open_source(spec, tmp_path).read_new({}).frame
    assert frame["x"].tolist()[0] == "1,5" and frame["x"].isna().tolist() == [False, True]
    assert frame["y"].tolist() == ["a;b", "caf\u00e9"]
    assert frame["z"].isna().tolist() == [True, True]


def test_a_header_naming_a_column_twice_is_an_error_naming_the_file(tmp_path: Path) -> None:
    write_csv(tmp_path / "incoming/a.csv", "x,y,x\n1,2,3\n")
    with pytest.raises(SourceError) as caught:
        csv_source(tmp_path).read_new({})
    assert str(caught.value) == (
        "incoming/a.csv: cannot read it: the header row names 'x' more than once"
    )


def test_parquet_files(tmp_path: Path) -> None:
    (tmp_path / "pq").mkdir()
    pd.DataFrame({"x": [1.5, None], "c": ["a", None]}).to_parquet(tmp_path / "pq/1.parquet")
    source = open_source(ParquetSource(kind="parquet", path="pq"), tmp_path)
    batch = source.read_new({})
    assert batch.frame["x"].tolist()[0] == 1.5
    assert batch.frame["c"].isna().tolist() == [False, True]
    assert list(batch.marks) == ["file:pq/1.parquet"]


def test_a_corrupt_parquet_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "pq").mkdir()
    (tmp_path / "pq/bad.parquet").write_bytes(b"this is not parquet")
    source = open_source(ParquetSource(kind="parquet", path="pq"), tmp_path)
    with pytest.raises(SourceError, match=r"^pq/bad.parquet: cannot read it: .*Parquet"):
        source.read_new({})


def test_the_memory_source_reads_each_frame_once() -> None:
    source = MemorySource()
    source.put("a", pd.DataFrame({"x": [1.0]}))
    seen: dict[str, str] = {}
    assert read_all(source, seen).frame["x"].tolist() == [1.0]
    source.put("b", pd.DataFrame({"x": [2.0]}))
    batch = read_all(source, seen)
    assert batch.frame["x"].tolist() == [2.0]
    assert batch.description == "1 new file: b"
    assert read_all(source, seen).description == "no new data"


# --- sql ------------------------------------------------------------------------------------

METADATA = sa.MetaData()
EVENTS = sa.Table(
    "events",
    METADATA,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("order", sa.Float),  # a reserved word: the watermark must be quoted
    sa.Column("label", sa.String),
    sa.Column("at", sa.DateTime),
)


@pytest.fixture
def database(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'events.db'}"
    engine = sa.create_engine(url)
    METADATA.create_all(engine)
    engine.dispose()
    return url


def insert(url: str, *rows: dict[str, object]) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(EVENTS.insert(), list(rows))
    engine.dispose()


def sql_source(
    url: str, query: str = "SELECT * FROM events", watermark: str | None = None
) -> QuerySource:
    spec = SqlSource(kind="sql", url=SecretStr(url), query=query, watermark=watermark)
    source = open_source(spec, Path("."))
    assert isinstance(source, QuerySource)
    return source


def test_an_integer_watermark_reads_each_row_once(database: str) -> None:
    insert(database, {"id": 2, "label": "b"}, {"id": 1, "label": "a"})
    source = sql_source(database, "SELECT id, label FROM events;", watermark="id")
    seen: dict[str, str] = {}

    first = read_all(source, seen)
    assert first.frame.to_dict("list") == {"id": [1, 2], "label": ["a", "b"]}
    assert first.marks == {"watermark": "2"}
    assert first.description == "2 rows with id, up to 2"
    assert json.loads(seen["watermark"]) == 2

    assert source.read_new(seen).description == "no new data"

    insert(database, {"id": 3, "label": "c"}, {"id": 4, "label": "d"})
    second = read_all(source, seen)
    assert second.frame["id"].tolist() == [3, 4]
    assert second.description == "2 rows with id > 2, up to 4"
    assert seen["watermark"] == "4"


def test_a_float_watermark_in_a_reserved_word_column(database: str) -> None:
    insert(database, {"id": 1, "order": 0.5}, {"id": 2, "order": 1.25}, {"id": 3, "order": None})
    source = sql_source(database, watermark="order")
    seen: dict[str, str] = {}
    first = read_all(source, seen)
    # A row without a watermark value cannot be placed, so it is never read.
    assert first.frame["id"].tolist() == [1, 2]
    assert seen == {"watermark": "1.25"}
    insert(database, {"id": 4, "order": 1.5})
    assert read_all(source, seen).frame["id"].tolist() == [4]


def test_a_timestamp_watermark(database: str) -> None:
    insert(
        database,
        {"id": 1, "at": datetime(2024, 5, 1, 10, 0, 0)},
        {"id": 2, "at": datetime(2024, 5, 1, 10, 0, 0, 500)},
    )
    source = sql_source(database, watermark="at")
    seen: dict[str, str] = {}
    assert read_all(source, seen).frame["id"].tolist() == [1, 2]
    assert isinstance(json.loads(seen["watermark"]), str)
    assert json.loads(seen["watermark"]).startswith("2024-05-01")
    insert(
        database,
        {"id": 3, "at": datetime(2024, 5, 1, 9, 0)},  # late and older: past the watermark
        {"id": 4, "at": datetime(2024, 5, 2)},
    )
    assert read_all(source, seen).frame["id"].tolist() == [4]
    assert source.read_new(seen).frame.empty


def test_without_a_watermark_the_whole_query_is_read_each_time(database: str) -> None:
    insert(database, {"id": 1}, {"id": 2})
    source = sql_source(database, "SELECT id FROM events ORDER BY id")
    batch = source.read_new({})
    assert batch.frame["id"].tolist() == [1, 2]
    assert list(batch.marks) == ["query"]
    assert batch.description == "2 rows from the query"
    # An unchanged result is nothing new; a changed one is read whole.
    assert source.read_new(batch.marks).description == "no new data"
    insert(database, {"id": 3})
    assert source.read_new(batch.marks).frame["id"].tolist() == [1, 2, 3]


def test_an_empty_query_is_no_new_data(database: str) -> None:
    batch = sql_source(database).read_new({})
    assert batch.frame.empty and batch.marks == {} and batch.description == "no new data"


def test_a_missing_watermark_column_is_named(database: str) -> None:
    with pytest.raises(SourceError) as caught:
        sql_source(database, "SELECT id, label FROM events", watermark="updated").read_new({})
    assert str(caught.value) == (
        "the watermark column 'updated' is not among the query's columns (id, label)"
    )


def test_a_sql_error_is_one_line(database: str) -> None:
    with pytest.raises(SourceError) as caught:
        sql_source(database, "SELECT * FROM nope").read_new({})
    message = str(caught.value)
    assert message == f"{database}: no such table: nope"


def test_a_bad_url_is_an_error() -> None:
    with pytest.raises(SourceError, match=r"data\.source\.url is not a SQLAlchemy URL"):
        sql_source("not a url").read_new({})


def test_an_unknown_database_kind_is_an_error() -> None:
    with pytest.raises(SourceError, match=r"^nosuchdb://u:\*\*\*@h/d: Can't load plugin"):
        sql_source("nosuchdb://u:secret@h/d").read_new({})


def test_a_refused_connection_hides_the_password() -> None:
    url = "postgresql+psycopg://reader:s3cr3t@127.0.0.1:1/warehouse"
    with pytest.raises(SourceError) as caught:
        sql_source(url).read_new({})
    message = str(caught.value)
    assert "s3cr3t" not in message
    assert message.startswith("postgresql+psycopg://reader:***@127.0.0.1:1/warehouse: ")
    assert "refused" in message.lower() or "failed" in message.lower()
    assert "\n" not in message


def test_an_unopenable_sqlite_file_is_an_error(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'no/such/dir/x.db'}"
    with pytest.raises(SourceError, match="unable to open database file"):
        sql_source(url).read_new({})


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"delimiter": ";", "decimal": ";"}, "the decimal mark must differ from the delimiter"),
        ({"quotechar": ","}, "the quote character must differ from the delimiter"),
        ({"delimiter": ";;"}, "at most 1 character"),
        ({"encoding": "klingon"}, "not a text encoding Python knows"),
    ],
)
def test_a_csv_dialect_that_cannot_be_read_is_a_spec_error(
    fields: dict[str, str], problem: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        CsvSource.model_validate({"kind": "csv", "path": "x", **fields})
    assert problem in str(caught.value)
