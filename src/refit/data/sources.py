"""Reading the rows a source holds that were not consumed yet.

A source is told what was already consumed as *marks* (`seen`), a mapping of positions that
the caller records once a batch is committed, and answers with a `Batch`: the new rows and the
marks that consume them. Marks are plain strings, so they store anywhere:

- csv and parquet files: `file:<path relative to the project, posix>` (or `file:s3://bucket/key`)
  -> `<sha256 of the content> <size> <stamp>`, the stamp being the modification time in ns of a
  local file or the ETag of an object (a bare sha256 when no stamp was trusted, as refit
  recorded every mark before it read stamps). A file whose size and stamp are the recorded
  ones is skipped unread; any other is hashed, and read again, whole, when its content changed.
- sql: `watermark` -> the JSON of the largest watermark value read (`42`, `1.5`,
  `"2024-05-01 10:00:00"`). Without a watermark column the whole query is read every time,
  `query` -> the content id of its result, and an unchanged result is no new data. Such a
  source exports its full data each time: pair it with the `latest` snapshot mode.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from sqlalchemy import URL, Connection, Dialect, TextClause, create_engine, make_url, text
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError

from refit.data._csv import FileRows, read_csv
from refit.data._listing import Entry, one_line, open_listing
from refit.data.snapshots import content_id
from refit.errors import SourceError
from refit.spec import CsvSource, ParquetSource, S3Options, SqlSource

NO_DATA = "no new data"
_LISTED_NAMES = 5
LINE = "_line"
"""The column of a row's line in its file, in `Batch.origins` and `Batch.malformed`."""


@dataclass(frozen=True, eq=False)
class Batch:
    """New rows from a source, and the marks that record them as consumed."""

    frame: pd.DataFrame
    """The rows as read; validation coerces their types."""
    marks: dict[str, str]
    """Positions to record once the batch is committed; pass them back as `seen` next time."""
    description: str
    """What was read, for people: `2 new files: a.csv, b.csv`, `3 rows with id > 41`."""
    origins: pd.DataFrame | None = None
    """Where each row of `frame` comes from, row for row: `_file` (as in the marks) and
    `_line` (its line in a CSV file, the header being line 1; its position in a Parquet
    file, from 1). None for a SQL source."""
    malformed: pd.DataFrame | None = None
    """Lines of the files that are no row (wrong number of fields, undecodable bytes):
    `_file`, `_line`, `_reason` and `_text` (the line's fields)."""
    restated: dict[str, str] = field(default_factory=dict)
    """Marks of files whose content is the one consumed but whose stamp moved (a file
    touched or copied again): record them whenever, so the next read skips the file unread."""


class Source(Protocol):
    """Anything that can read new rows. A test double is a few lines::

    class Fixed:
        def read_new(self, seen: Mapping[str, str]) -> Batch:
            return Batch(pd.DataFrame({"x": [1.0]}), {"fixed": "1"}, "1 row")
    """

    def read_new(self, seen: Mapping[str, str]) -> Batch:
        """Return the rows not covered by `seen`, with the marks that cover them."""
        ...


def open_source(
    spec: CsvSource | ParquetSource | SqlSource, root: Path, s3: S3Options | None = None
) -> Source:
    """Open the source a spec describes; relative file paths resolve against `root`, and
    `s3://` paths are reached with the `storage.s3` options `s3`."""
    if isinstance(spec, CsvSource):
        return FileSource(spec.path, root, ".csv", lambda data: read_csv(data, spec), s3)
    if isinstance(spec, ParquetSource):
        return FileSource(spec.path, root, ".parquet", _read_parquet, s3)
    return QuerySource(spec.url.get_secret_value(), spec.query, spec.watermark)


def _no_data() -> Batch:
    return Batch(pd.DataFrame(), {}, NO_DATA)


# --- files ----------------------------------------------------------------------------------


class FileSource:
    """Files matched by one path: a file, a folder (its `*<suffix>` files) or a glob, on the
    local filesystem or in S3 (`s3://bucket/prefix/`).

    A file whose size and stamp (modification time, or ETag) are those recorded when it was
    read is skipped without reading it; any other is read and hashed, and it is new data only
    when its content is not the one recorded.
    """

    def __init__(
        self,
        path: str,
        root: Path,
        suffix: str,
        reader: Callable[[bytes], pd.DataFrame | FileRows],
        s3: S3Options | None = None,
    ) -> None:
        self.path = path
        self.root = root
        self.suffix = suffix
        self.listing = open_listing(path, root, suffix, s3)
        self._reader = reader

    def read_new(self, seen: Mapping[str, str]) -> Batch:
        frames: list[pd.DataFrame] = []
        origins: list[pd.DataFrame] = []
        malformed: list[pd.DataFrame] = []
        marks: dict[str, str] = {}
        restated: dict[str, str] = {}
        for entry in self.listing.entries():
            key = f"file:{entry.name}"
            recorded = seen.get(key)
            if recorded is not None and recorded == _stat_mark(recorded, entry):
                continue
            # A writer that creates the file before filling it: wait for the content.
            if entry.size == 0:
                continue
            data = self.listing.read(entry)
            if not data:
                continue
            digest = hashlib.sha256(data).hexdigest()
            # A file that changed since it was listed keeps no stamp: it is hashed next time.
            trusted = entry if len(data) == entry.size else replace(entry, stamp=None)
            mark = _mark(digest, trusted)
            if recorded is not None and _digest(recorded) == digest:
                if mark != recorded:
                    restated[key] = mark
                continue
            try:
                read = self._reader(data)
            except Exception as exc:
                raise SourceError(f"{entry.name}: cannot read it: {one_line(exc)}") from None
            if not isinstance(read, FileRows):
                read = FileRows(read, list(range(1, len(read) + 1)), [])
            if len(read.frame.columns):
                frames.append(read.frame)
                origins.append(pd.DataFrame({"_file": entry.name, LINE: read.lines}))
            if read.malformed:
                lines, reasons, texts = zip(*read.malformed, strict=True)
                malformed.append(
                    pd.DataFrame(
                        {"_file": entry.name, LINE: lines, "_reason": reasons, "_text": texts}
                    )
                )
            marks[key] = mark
        if not marks:
            return replace(_no_data(), restated=restated)
        return Batch(
            _concat(frames),
            marks,
            _describe_files([k.removeprefix("file:") for k in marks]),
            origins=_concat(origins),
            malformed=_concat(malformed),
            restated=restated,
        )


def _mark(digest: str, entry: Entry) -> str:
    """A file's mark: `<sha256> <size> <stamp>`, or the bare sha256 when the stamp is not
    trusted (and as refit recorded every mark before it read stamps)."""
    return digest if entry.stamp is None else f"{digest} {entry.size} {entry.stamp}"


def _digest(mark: str) -> str:
    return mark.split(" ", 1)[0]


def _stat_mark(recorded: str, entry: Entry) -> str | None:
    """The mark the file would have if its content were the recorded one; None without a stamp."""
    return None if entry.stamp is None else _mark(_digest(recorded), entry)


def _read_parquet(data: bytes) -> pd.DataFrame:
    frame: pd.DataFrame = pq.read_table(io.BytesIO(data)).to_pandas()
    return frame


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _describe_files(names: list[str]) -> str:
    noun = "file" if len(names) == 1 else "files"
    shown = ", ".join(names[:_LISTED_NAMES])
    if len(names) > _LISTED_NAMES:
        shown += f" and {len(names) - _LISTED_NAMES} more"
    return f"{len(names)} new {noun}: {shown}"


class MemorySource:
    """An in-memory twin of a file source, for tests: frames put by name play the files.

    >>> source = MemorySource()
    >>> source.put("a", pd.DataFrame({"x": [1.0]}))
    >>> batch = source.read_new({})
    >>> source.read_new(batch.marks).description
    'no new data'
    """

    def __init__(self) -> None:
        self._frames: dict[str, pd.DataFrame] = {}

    def put(self, name: str, frame: pd.DataFrame) -> None:
        """Add a frame, or replace one (it is then read again, like a rewritten file)."""
        self._frames[name] = frame

    def read_new(self, seen: Mapping[str, str]) -> Batch:
        frames: list[pd.DataFrame] = []
        marks: dict[str, str] = {}
        for name in sorted(self._frames):
            digest = content_id(self._frames[name])
            if seen.get(f"memory:{name}") != digest:
                frames.append(self._frames[name])
                marks[f"memory:{name}"] = digest
        if not marks:
            return _no_data()
        return Batch(_concat(frames), marks, _describe_files([k[7:] for k in marks]))


# --- sql ------------------------------------------------------------------------------------


class QuerySource:
    """A SQL query, read whole or incrementally past the last value of a watermark column."""

    def __init__(self, url: str, query: str, watermark: str | None = None) -> None:
        self.url = url
        self.query = query.strip().rstrip(";").strip()
        self.watermark = watermark

    def read_new(self, seen: Mapping[str, str]) -> Batch:
        url = self._parse_url()
        shown = url.render_as_string(hide_password=True)
        try:
            engine = create_engine(url)
        except ImportError as exc:
            raise SourceError(
                f"{shown}: the database driver is not installed ({exc.name or exc})"
            ) from None
        except (SQLAlchemyError, ValueError, TypeError) as exc:
            raise SourceError(f"{shown}: {self._clean(exc, url)}") from None
        try:
            with engine.connect() as conn:
                if self.watermark is None:
                    return self._read_whole(conn, seen)
                return self._read_past(self.watermark, conn, engine.dialect, seen)
        except SQLAlchemyError as exc:
            raise SourceError(f"{shown}: {self._clean(exc, url)}") from None
        finally:
            engine.dispose()

    def _read_whole(self, conn: Connection, seen: Mapping[str, str]) -> Batch:
        frame = _query(conn, text(self.query), {})
        # The same result as last time is nothing new; any change brings the whole result.
        digest = content_id(frame)
        if frame.empty or seen.get("query") == digest:
            return _no_data()
        return Batch(frame, {"query": digest}, f"{len(frame)} rows from the query")

    def _read_past(
        self, watermark: str, conn: Connection, dialect: Dialect, seen: Mapping[str, str]
    ) -> Batch:
        column = dialect.identifier_preparer.quote(watermark)
        subquery = f"SELECT * FROM ({self.query}) AS src"
        found = list(conn.execute(text(f"{subquery} WHERE 1 = 0")).keys())
        if watermark not in found:
            raise SourceError(
                f"the watermark column {watermark!r} is not among the query's columns "
                f"({', '.join(found)})"
            )
        mark = seen.get("watermark")
        if mark is None:
            where, params, since = f"{column} IS NOT NULL", {}, ""
        else:
            last = _load_mark(mark)
            where, params, since = f"{column} > :last", {"last": last}, f" > {mark}"
        sql = text(f"{subquery} WHERE {where} ORDER BY {column}")
        frame = _query(conn, sql, params)
        if frame.empty:
            return _no_data()
        # The database ordered the rows, so its last one holds the largest value by its rules.
        newest = json.dumps(_plain(frame[watermark].iloc[-1]))
        description = f"{len(frame)} rows with {watermark}{since}, up to {newest}"
        return Batch(frame, {"watermark": newest}, description)

    def _parse_url(self) -> URL:
        try:
            return make_url(self.url)
        except (ArgumentError, ValueError):
            raise SourceError(
                "data.source.url is not a SQLAlchemy URL "
                "(expected dialect+driver://user:password@host/database)"
            ) from None

    def _clean(self, exc: Exception, url: URL) -> str:
        cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
        message = one_line(cause)
        if url.password:
            message = message.replace(str(url.password), "***")
        return message


def _query(conn: Connection, sql: TextClause, params: dict[str, Any]) -> pd.DataFrame:
    result = conn.execute(sql, params)
    columns = list(result.keys())
    return pd.DataFrame.from_records(result.fetchall(), columns=columns, coerce_float=True)


def _load_mark(mark: str) -> Any:
    try:
        return json.loads(mark)
    except json.JSONDecodeError:
        raise SourceError(f"the recorded watermark {mark!r} is not valid JSON") from None


def _plain(value: Any) -> Any:
    """A watermark value as JSON can hold it: timestamps as ISO strings."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else str(value)
    if isinstance(value, float) and not math.isfinite(value):
        raise SourceError(f"the watermark column holds {value}, which cannot be a position")
    return value
