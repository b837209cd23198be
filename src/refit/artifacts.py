"""The artifact store: snapshot and model files, content-addressed and verified.

A file's key is derived from its sha256 (`models/3f/3fa2...c1.joblib`), so the same bytes
are stored once and a key can never name two different contents. Writes are atomic: a local
file is written to a temporary name, fsynced and renamed into place; on S3 a single PUT makes
the object visible whole. Reads check the sha256 recorded for the file before returning a
byte of it, so a truncated or altered file is refused, never deserialised.

Every key a store is asked for is confined to its root before a byte is read: an absolute path,
a `..` component or a scheme is refused (`ArtifactPathError`), and in a local folder so is a key
that leads outside the folder through a symlink. A registry row therefore cannot point a reader
at any other file, whatever sha256 it records.

    store = open_artifact_store(".refit/artifacts")
    ref = store.put(b"...", kind="models", suffix=".joblib")
    data = store.get(ref.uri, ref.sha256)
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path, PureWindowsPath
from typing import Any, Protocol

from refit.errors import ArtifactCorruptError, ArtifactError, ArtifactPathError, NotFoundError
from refit.spec import S3Options


@dataclass(frozen=True)
class ArtifactRef:
    """Where a file lives in the store (`uri`, relative to the store root) and its digest."""

    uri: str
    sha256: str
    size: int


class ArtifactStore(Protocol):
    """A place to put immutable files by content and to get them back, verified."""

    url: str

    def put(self, data: bytes, *, kind: str, suffix: str) -> ArtifactRef: ...

    def get(self, uri: str, sha256: str) -> bytes: ...

    def exists(self, uri: str) -> bool: ...

    def delete(self, uri: str) -> None:
        """Remove a file (one the registry no longer names); a missing one is not an error."""
        ...


def content_key(sha256: str, kind: str, suffix: str) -> str:
    if not kind.isidentifier():
        raise ValueError(f"artifact kind must be a plain word, got {kind!r}")
    return f"{kind}/{sha256[:2]}/{sha256}{suffix}"


def confined(uri: str) -> str:
    """`uri` if it is a key inside a store (plain `a/b/c` segments); else `ArtifactPathError`.

    This looks at the text only; a local store also follows symlinks (`LocalArtifactStore`).
    """
    if not uri or "\x00" in uri:
        raise ArtifactPathError(f"artifact path {uri!r} is empty or holds a NUL byte")
    if uri.startswith(("/", "\\")) or PureWindowsPath(uri).drive:
        raise ArtifactPathError(
            f"artifact path {uri!r} is absolute: a stored path is relative to the store's root"
        )
    if "://" in uri:
        raise ArtifactPathError(
            f"artifact path {uri!r} names a location of its own: a stored path is relative "
            "to the store's root"
        )
    if any(part in ("..", ".", "") for part in uri.replace("\\", "/").split("/")):
        raise ArtifactPathError(
            f"artifact path {uri!r} has a '..', '.' or empty segment: a stored path never "
            "leaves or re-enters a folder"
        )
    return uri


def verify(data: bytes, sha256: str, where: str) -> bytes:
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise ArtifactCorruptError(
            f"{where} is corrupt: its sha256 is {actual[:12]}..., the registry recorded "
            f"{sha256[:12]}... ({len(data)} bytes read). Refusing to load it."
        )
    return data


class LocalArtifactStore:
    """Files in a local folder."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.url = str(self.root)

    def put(self, data: bytes, *, kind: str, suffix: str) -> ArtifactRef:
        sha256 = hashlib.sha256(data).hexdigest()
        key = content_key(sha256, kind, suffix)
        path = self.root / key
        if not self._holds(path, sha256):
            write_atomically(path, data, what="artifact ")
        return ArtifactRef(key, sha256, len(data))

    @staticmethod
    def _holds(path: Path, sha256: str) -> bool:
        """Whether `path` already holds exactly these bytes (a damaged copy is rewritten)."""
        try:
            return hashlib.sha256(path.read_bytes()).hexdigest() == sha256
        except OSError:
            return False

    def _inside(self, uri: str) -> Path:
        """The file a key names, refused if it (or a symlink on its way) leaves the root."""
        path = self.root / confined(uri)
        try:
            real, root = path.resolve(), self.root.resolve()
        except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop
            raise ArtifactPathError(f"artifact path {uri!r} cannot be resolved: {exc}") from None
        if not real.is_relative_to(root):
            raise ArtifactPathError(
                f"artifact path {uri!r} leads outside the store through a symlink"
            )
        return real

    def get(self, uri: str, sha256: str) -> bytes:
        path = self._inside(uri)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise NotFoundError(f"artifact {uri} is missing from {self.root}") from None
        except OSError as exc:
            raise ArtifactError(f"cannot read artifact {path}: {exc.strerror}") from None
        return verify(data, sha256, f"artifact {path}")

    def exists(self, uri: str) -> bool:
        return self._inside(uri).is_file()

    def delete(self, uri: str) -> None:
        path = self._inside(uri)
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise ArtifactError(f"cannot delete artifact {path}: {exc.strerror}") from None


def write_atomically(path: Path, data: bytes, mode: int | None = None, what: str = "") -> None:
    """Write `data` to `path` in full or not at all: into a temporary file beside it, synced,
    then renamed over it (and the folder synced), so a crash never leaves half a file there.
    `mode` sets the file's permissions; `what` names the file in the ArtifactError raised on
    failure (e.g. "artifact ")."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            if mode is not None:
                os.chmod(tmp, mode)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        raise ArtifactError(f"cannot write {what}{path}: {exc.strerror or exc}") from None


class FsspecArtifactStore:
    """Files in any fsspec filesystem: S3 and S3-compatible stores, or memory (tests)."""

    def __init__(self, url: str, **storage_options: Any) -> None:
        import fsspec

        self.url = url.rstrip("/")
        protocol = url.split("://", 1)[0]
        try:
            self.fs = fsspec.filesystem(protocol, **storage_options)
        except (ImportError, ValueError) as exc:
            raise ArtifactError(f"cannot open artifact store {url}: {exc}") from None

    def _path(self, uri: str) -> str:
        return f"{self.url}/{confined(uri)}"

    def put(self, data: bytes, *, kind: str, suffix: str) -> ArtifactRef:
        sha256 = hashlib.sha256(data).hexdigest()
        key = content_key(sha256, kind, suffix)
        try:
            if not self.exists(key):
                # One PUT: the object appears whole or not at all.
                self.fs.pipe_file(self._path(key), data)
        except ArtifactError:
            raise
        except Exception as exc:
            raise ArtifactError(f"cannot write artifact {self._path(key)}: {exc}") from None
        return ArtifactRef(key, sha256, len(data))

    def get(self, uri: str, sha256: str) -> bytes:
        path = self._path(uri)
        try:
            data: bytes = self.fs.cat_file(path)
        except FileNotFoundError:
            raise NotFoundError(f"artifact {path} is missing") from None
        except Exception as exc:
            raise ArtifactError(f"cannot read artifact {path}: {exc}") from None
        return verify(data, sha256, f"artifact {path}")

    def exists(self, uri: str) -> bool:
        path = self._path(uri)
        try:
            return bool(self.fs.exists(path))
        except Exception as exc:
            raise ArtifactError(f"cannot reach artifact store {self.url}: {exc}") from None

    def delete(self, uri: str) -> None:
        path = self._path(uri)
        try:
            if self.fs.exists(path):
                self.fs.rm_file(path)
        except Exception as exc:
            raise ArtifactError(f"cannot delete artifact {path}: {exc}") from None


def s3_storage_options(s3: S3Options | None = None) -> dict[str, Any]:
    """The fsspec options of `storage.s3`, for every S3 filesystem refit opens.

    What `storage.s3` leaves out, botocore takes from the `AWS_*` variables (credentials,
    `AWS_ENDPOINT_URL`, `AWS_REGION`) or its other usual places.
    """
    s3 = s3 or S3Options()
    options: dict[str, Any] = {"client_kwargs": {}}
    if s3.endpoint_url:
        options["client_kwargs"]["endpoint_url"] = s3.endpoint_url
    if s3.region:
        options["client_kwargs"]["region_name"] = s3.region
    if s3.access_key_id:
        options["key"] = s3.access_key_id
    if s3.secret_access_key:
        options["secret"] = s3.secret_access_key.get_secret_value()
    # Each CLI run or worker is short-lived; a cached listing could hide a new object.
    options["skip_instance_cache"] = True
    options["use_listings_cache"] = False
    return options


def open_artifact_store(url: str, s3: S3Options | None = None) -> ArtifactStore:
    """The store behind a URL: a folder path, `s3://bucket/prefix` or `memory://name`."""
    if url.startswith("s3://"):
        return FsspecArtifactStore(url, **s3_storage_options(s3))
    if url.startswith("memory://"):
        return FsspecArtifactStore(url, skip_instance_cache=False)
    if "://" in url and not url.startswith("file://"):
        raise ArtifactError(f"unsupported artifact store {url!r}: use a folder path or s3://")
    return LocalArtifactStore(url.removeprefix("file://"))
