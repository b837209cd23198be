"""Whole numbers a client writes in text (headers such as `Content-Length` and
`Inference-Header-Content-Length`), read with bounds.

    size = client_count(header, "Inference-Header-Content-Length")

Python's `int()` of client text costs time quadratic in its digits and raises past 4,300 of
them, and `str.isdigit` takes digits `int()` refuses (`"²"`): every count a client sends is read
here, at most `MAX_COUNT`, and anything else is a `MalformedBodyError` naming the field.
"""

from __future__ import annotations

import re

from refit.errors import MalformedBodyError

MAX_COUNT = 2**53
"""The largest count (a length, a size, a dimension of a shape) a client may write: far above
any body this server reads, and exact as a JSON number in every client."""
_DIGITS = re.compile(r"[0-9]+", re.ASCII)
_SHOWN = 40


def shown(text: str) -> str:
    """`text` as an answer repeats it: quoted, and cut to a few dozen characters."""
    return repr(text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "...")


def client_count(text: str, field: str) -> int:
    """The whole number written in `text`: ASCII digits only, at most `MAX_COUNT`."""
    digits = text.strip()
    if not _DIGITS.fullmatch(digits):
        raise MalformedBodyError(
            f"{field} is {shown(text)}; expected a whole number written in digits 0-9"
        )
    significant = digits.lstrip("0") or "0"
    if len(significant) > len(str(MAX_COUNT)) or int(significant) > MAX_COUNT:
        raise MalformedBodyError(
            f"{field} is {shown(text)} ({len(significant)} digits); the largest count this "
            f"server reads is {MAX_COUNT}"
        )
    return int(significant)
