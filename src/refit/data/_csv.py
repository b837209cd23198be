"""Reading one CSV file in the dialect a `csv` source declares, line by line, so that a
malformed line is one rejected row (with its line number) instead of a refused file.

Every field is kept as text, as written; an empty field and the source's `na_values` are
missing. Validation then reads each value by its feature's rule (`refit.values`).
"""

from __future__ import annotations

import codecs
import csv
import io
from collections import Counter
from dataclasses import dataclass

import pandas as pd

from refit.spec import CsvSource


@dataclass(frozen=True, eq=False)
class FileRows:
    """The rows of one file, with their line numbers, and the lines that are no row."""

    frame: pd.DataFrame
    lines: list[int]
    """The line each row of `frame` starts on."""
    malformed: list[tuple[int, str, str]]
    """(line, reason, the line's fields joined again) of each line that is no row."""


def read_csv(data: bytes, source: CsvSource) -> FileRows:
    """The rows of a CSV file's bytes: a header row of names, then one row per line."""
    encoding = codecs.lookup(source.encoding).name
    # Undecodable bytes become lone surrogates, so the line holding them can be named.
    text = data.decode("utf-8-sig" if encoding == "utf-8" else encoding, "surrogateescape")
    reader = csv.reader(
        io.StringIO(text, newline=""), delimiter=source.delimiter, quotechar=source.quotechar
    )
    undecodable = not _clean(text)
    header: list[str] | None = None
    rows: list[list[str]] = []
    lines: list[int] = []
    malformed: list[tuple[int, str, str]] = []
    start = 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            malformed.append((start, f"the line is not CSV: {exc}", ""))
            if reader.line_num < start:  # no progress: nothing more can be read
                break
            start = reader.line_num + 1
            continue
        line, start = start, reader.line_num + 1
        if not row or row == [""]:
            continue  # a blank line
        if header is None:
            header = _header(row, undecodable, source.encoding)
            continue
        if undecodable and not _clean("".join(row)):
            reason = f"the line holds bytes that are not {source.encoding} text"
            malformed.append((line, reason, _shown(row, source.delimiter)))
        elif len(row) != len(header):
            reason = f"{len(row)} fields where the header has {len(header)}"
            malformed.append((line, reason, _shown(row, source.delimiter)))
        else:
            rows.append(row)
            lines.append(line)
    frame = pd.DataFrame(rows, columns=header or [], dtype="str")
    if len(frame.columns):
        frame = frame.mask(frame.isin(["", *source.na_values]))
    return FileRows(frame, lines, malformed)


def _header(row: list[str], undecodable: bool, encoding: str) -> list[str]:
    if undecodable and not _clean("".join(row)):
        raise ValueError(f"the header row holds bytes that are not {encoding} text")
    twice = sorted(name for name, count in Counter(row).items() if count > 1)
    if twice:
        raise ValueError(f"the header row names {', '.join(map(repr, twice))} more than once")
    return row


def _clean(text: str) -> bool:
    """No lone surrogates (the bytes that did not decode)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _shown(row: list[str], delimiter: str) -> str:
    return delimiter.join(row).encode("utf-8", "backslashreplace").decode("utf-8")
