"""What a file source's path matches now: local files, or objects in an S3 bucket.

A listing tells each file's size and a stamp that changes when its content does (the
modification time of a local file, the ETag of an object) without reading a byte of it, so
the source reads only what is new or changed.
"""

from __future__ import annotations

import glob
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from refit.artifacts import s3_storage_options
from refit.errors import SourceError
from refit.spec import S3Options

S3 = "s3://"
GLOB_CHARS = frozenset("*?[")
_TEMP_SUFFIXES = (".tmp", ".part")
# A file modified this close to the moment it is listed may change again within the clock's
# resolution without a new modification time: its stamp is not trusted (git's "racy clean").
_SETTLE_NS = 2_000_000_000


@dataclass(frozen=True)
class Entry:
    """One file or object the path matches."""

    name: str
    """How marks and messages name it: a path relative to the project, or an s3:// URL."""
    location: str
    """Where to read it: a local path, or bucket/key."""
    size: int
    stamp: str | None
    """Changes whenever the content does; None when it cannot be trusted yet."""


class Listing(Protocol):
    def entries(self) -> list[Entry]:
        """The files the path matches now, sorted by name."""
        ...

    def read(self, entry: Entry) -> bytes: ...


def open_listing(path: str, root: Path, suffix: str, s3: S3Options | None) -> Listing:
    """The listing behind a source's `path`: an `s3://` URL, or a local path under `root`."""
    if path.startswith(S3):
        return ObjectListing(path, suffix, s3)
    return LocalListing(path, root, suffix)


def is_temporary(name: str) -> bool:
    """A file still being written, by the usual conventions of writers."""
    return name.startswith((".", "~")) or name.endswith(_TEMP_SUFFIXES)


class LocalListing:
    """Files on a local filesystem: one file, a folder (its `*<suffix>` files) or a glob."""

    def __init__(self, path: str, root: Path, suffix: str) -> None:
        self.path = path
        self.root = root
        self.suffix = suffix

    def entries(self) -> list[Entry]:
        listed_at = time.time_ns()
        entries = []
        for file in self._files():
            try:
                stat = file.stat()
            except FileNotFoundError:
                continue  # removed since it was listed
            except OSError as exc:
                raise SourceError(f"{self._name(file)}: cannot read it: {reason(exc)}") from None
            settled = listed_at - stat.st_mtime_ns >= _SETTLE_NS
            stamp = str(stat.st_mtime_ns) if settled else None
            entries.append(Entry(self._name(file), str(file), stat.st_size, stamp))
        return entries

    def read(self, entry: Entry) -> bytes:
        try:
            return Path(entry.location).read_bytes()
        except OSError as exc:
            raise SourceError(f"{entry.name}: cannot read it: {reason(exc)}") from None

    def _name(self, file: Path) -> str:
        try:
            return file.relative_to(self.root).as_posix()
        except ValueError:
            return file.as_posix()

    def _files(self) -> list[Path]:
        path = Path(self.path).expanduser()
        if not path.is_absolute():
            path = self.root / path
        if GLOB_CHARS & set(self.path):
            matches = (Path(p) for p in glob.glob(str(path)))
            return sorted(p for p in matches if p.is_file() and not is_temporary(p.name))
        if path.is_dir():
            try:
                children = list(path.iterdir())
            except OSError as exc:
                raise SourceError(f"{path}: cannot list the folder: {reason(exc)}") from None
            return sorted(
                p
                for p in children
                if p.suffix.lower() == self.suffix and p.is_file() and not is_temporary(p.name)
            )
        if path.is_file():
            return [path]
        raise SourceError(f"{path}: no such file or folder (data.source.path is {self.path!r})")


class ObjectListing:
    """Objects in S3: one object, a folder (`s3://bucket/prefix/`, its `*<suffix>` objects,
    not those under deeper prefixes) or a glob (`s3://bucket/prefix/*.csv`)."""

    def __init__(self, url: str, suffix: str, s3: S3Options | None) -> None:
        import fsspec

        self.url = url
        self.suffix = suffix
        try:
            self.fs = fsspec.filesystem("s3", **s3_storage_options(s3))
        except (ImportError, ValueError) as exc:
            raise SourceError(f"{url}: cannot open the S3 filesystem: {exc}") from None

    def entries(self) -> list[Entry]:
        try:
            infos = self._infos()
        except SourceError:
            raise
        except Exception as exc:
            raise SourceError(f"{self.url}: cannot list it: {one_line(exc)}") from None
        entries = []
        for info in sorted(infos, key=lambda i: str(i["name"])):
            key = str(info["name"])
            if info.get("type") != "file" or is_temporary(key.rsplit("/", 1)[-1]):
                continue
            etag = info.get("ETag") or info.get("etag")
            stamp = str(etag).strip('"') if etag else None
            entries.append(Entry(S3 + key, key, int(info.get("size") or 0), stamp))
        return entries

    def read(self, entry: Entry) -> bytes:
        try:
            data: bytes = self.fs.cat_file(entry.location)
        except Exception as exc:
            raise SourceError(f"{entry.name}: cannot read it: {one_line(exc)}") from None
        return data

    def _infos(self) -> list[dict[str, Any]]:
        path = self.url.removeprefix(S3)
        bucket = path.split("/", 1)[0]
        if GLOB_CHARS & set(path):
            return list(self.fs.glob(path, detail=True).values())
        if not path.endswith("/") and "/" in path:
            try:
                info: dict[str, Any] = self.fs.info(path)
            except FileNotFoundError:
                info = {}
            if info.get("type") == "file":
                return [info]
        try:
            children: list[dict[str, Any]] = self.fs.ls(path.rstrip("/"), detail=True)
        except FileNotFoundError:
            if not self.fs.exists(bucket):
                raise SourceError(
                    f"{self.url}: no such bucket {bucket!r} (data.source.path is {self.url!r})"
                ) from None
            # An S3 "folder" exists only while it holds an object: an empty one is no data.
            return []
        return [c for c in children if str(c["name"]).lower().endswith(self.suffix)]


def reason(exc: OSError) -> str:
    """An OS error's reason, without the path it names (messages name it their own way)."""
    return exc.strerror or one_line(exc)


def one_line(exc: BaseException) -> str:
    """The first non-blank line of an error's message (or its class name)."""
    for line in str(exc).splitlines():
        if line.strip():
            return line.strip()
    return type(exc).__name__
