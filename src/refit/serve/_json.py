"""Request bodies as JSON: parsed strictly, and bounded before they are parsed.

    value = parse_json(body, max_separators=reader.max_separators)

- A body of more values than the route could take is refused before it is parsed
  (`TooLargeError`): parsing 10 MiB of tiny values holds the worker for a large part of a second.
- An object that gives a key twice is refused (`MalformedBodyError` naming the key), where
  parsers silently keep the last value: two parsers (a proxy's and refit's) would read two
  different requests.
- NaN and infinities parse (JSON cannot carry them; the checks of a value then refuse them).

Both checks cost a few C-speed byte counts in the common case; the exact passes run only when
those counts cannot decide.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterator
from itertools import chain
from typing import Any

import numpy as np
import orjson

from refit.errors import MalformedBodyError, TooLargeError
from refit.serve._numbers import shown

_NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
_CONTAINERS = (dict, list)
_FIRST_SLICE, _SLICE = 2**16, 2**20
_QUOTE = ord('"')


def parse_json(body: bytes, max_separators: int | None = None) -> Any:
    """The JSON value of a body; `MalformedBodyError` says where it breaks or which key an
    object gives twice. With `max_separators`, a body of more commas (between values, outside
    strings) is refused with `TooLargeError` before it is parsed."""
    if not body.strip():
        raise MalformedBodyError("the request body is empty; expected a JSON object")
    if max_separators is not None and _separators(body, max_separators) > max_separators:
        raise TooLargeError(
            f"the body holds more than {max_separators} values, more than a request to this "
            "model can (serve.max_batch_rows rows of its fields)"
        )
    try:
        value = orjson.loads(body)  # the common case, several times faster
    except orjson.JSONDecodeError:
        return _parse_slowly(body)  # NaN, huge integers, or broken JSON: it says which
    keys = _keys(value, body.count(b"{") + body.count(b"["))
    if body.count(b":") != keys and count_outside_quotes(_unescaped(body), b":") != keys:
        # Colons outside strings are keys: more of them than the parsed objects have keys
        # means an object gave one twice (orjson keeps the last). Find and name it.
        _parse_slowly(body)
    return value


def _separators(body: bytes, limit: int) -> int:
    """The commas outside strings, or a count past `limit`: counted exactly only when the count
    of all commas (a C-speed upper bound) is over `limit`."""
    commas = body.count(b",")
    return commas if commas <= limit else count_outside_quotes(_unescaped(body), b",", limit)


def count_outside_quotes(text: bytes, chars: bytes, limit: int | None = None) -> int:
    """How many of the bytes `chars` lie outside quoted runs of `text` (in which every quote
    opens or closes one), or a count past `limit`: counted with numpy a slice at a time,
    stopping once past `limit` (a slice's count is exact for the slice)."""
    data = np.frombuffer(text, dtype=np.uint8)
    counted, inside, start, size = 0, 0, 0, _FIRST_SLICE
    while start < len(data) and (limit is None or counted <= limit):
        part = data[start : start + size]
        # The quotes so far, modulo 256 (uint8 wraps): their parity says inside or outside.
        quotes = np.cumsum(part == _QUOTE, dtype=np.uint8)
        found = part == chars[0]
        for char in chars[1:]:
            found |= part == char
        counted += int(np.count_nonzero((quotes[found] & 1) == inside))
        inside = (inside + int(quotes[-1])) & 1
        start, size = start + size, _SLICE
    return counted


def _unescaped(body: bytes) -> bytes:
    """A JSON text without its escaped backslashes and quotes: every quote left opens or closes
    a string."""
    if b"\\" not in body:
        return body
    return body.replace(b"\\\\", b"").replace(b'\\"', b"")


def _keys(value: Any, containers: int) -> int:
    """How many keys the objects of a parsed JSON value have, all nesting levels together:
    one level at a time, each in a few C-speed passes. `containers` is at least the number of
    its objects and arrays (the body's `{` and `[`, some maybe inside strings): once that many
    are counted, no level below is looked at (records of scalars take no pass over values)."""
    keys, level, seen = 0, [value], 0
    while level:
        dicts = [item for item in level if type(item) is dict]
        keys += sum(map(len, dicts))
        lists = [item for item in level if type(item) is list]
        seen += len(dicts) + len(lists)
        if seen >= containers:  # every container is counted: none lies deeper
            break
        types = set(map(type, _inner(dicts, lists)))
        if dict not in types and list not in types:
            break
        level = [item for item in _inner(dicts, lists) if type(item) in _CONTAINERS]
    return keys


def _inner(dicts: list[dict[str, Any]], lists: list[list[Any]]) -> Iterator[Any]:
    """The values of `dicts` and the items of `lists`, lazily."""
    return chain(chain.from_iterable(map(dict.values, dicts)), chain.from_iterable(lists))


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value = dict(pairs)
    if len(value) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise MalformedBodyError(
                    f"the key {shown(key)} is given twice in one object of the body; give "
                    "each key once"
                )
            seen.add(key)
    return value


def _parse_slowly(body: bytes) -> Any:
    """The standard library's parse: NaN and infinities, integers past 64 bits, and a precise
    error (where the JSON breaks, which key is given twice)."""
    try:
        return json.loads(body, parse_constant=_NON_FINITE.__getitem__, object_pairs_hook=_unique)
    except UnicodeDecodeError:
        raise MalformedBodyError("the request body is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise MalformedBodyError(
            f"the request body is not valid JSON: {exc.msg} at line {exc.lineno}, "
            f"column {exc.colno}"
        ) from None
    except RecursionError:
        raise MalformedBodyError("the request body nests arrays or objects too deeply") from None
    except ValueError:  # an integer literal longer than Python converts
        raise MalformedBodyError(
            f"the request body holds an integer of more than {sys.get_int_max_str_digits()} digits"
        ) from None
