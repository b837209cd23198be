"""Rendered files onto disk: each written atomically, none over a different file by accident."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from refit.artifacts import write_atomically
from refit.errors import AlreadyExistsError, ArtifactError


@dataclass(frozen=True)
class Written:
    """What `write_files` did with one file: `wrote`, `unchanged` or `kept`."""

    path: Path
    action: str


def write_files(
    out: Path,
    files: Mapping[str, str],
    *,
    force: bool = False,
    keep: frozenset[str] = frozenset(),
) -> list[Written]:
    """Write `files` (relative name -> text) under `out`, creating it if needed.

    A file that exists with other content is refused, all of them before anything is
    written, unless `force`; a file with the same content is left alone. Names in `keep` are
    written only when absent (a user's own settings, such as credentials), even with `force`,
    and readable by their owner alone.
    Each file appears whole or not at all: it is written beside its place, then renamed.
    """
    actions: dict[str, str] = {}
    different: list[str] = []
    for name, text in files.items():
        target = out / name
        if not target.exists():
            actions[name] = "wrote"
        elif name in keep:
            actions[name] = "kept"
        elif _read(target) == text.encode("utf-8"):
            actions[name] = "unchanged"
        elif force:
            actions[name] = "wrote"
        else:
            different.append(name)
    if different:
        raise AlreadyExistsError(
            f"{out} already holds {_files(different)} with other content: "
            "render into an empty folder, or give --force to replace them"
            + (f" ({', '.join(sorted(keep))} is kept in any case)" if keep else "")
        )
    for name, action in actions.items():
        if action == "wrote":
            mode = 0o600 if name in keep else 0o644
            write_atomically(out / name, files[name].encode("utf-8"), mode)
    return [Written(out / name, action) for name, action in actions.items()]


def _files(names: list[str]) -> str:
    return ("the file " if len(names) == 1 else "the files ") + ", ".join(names)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ArtifactError(f"cannot read {path}: {exc.strerror or exc}") from None
