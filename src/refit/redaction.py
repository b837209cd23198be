"""What a client may read of a server-side failure: no absolute path, bucket, endpoint or
database URL, which say where refit's stores live and are for the log alone.

    for_clients("artifact /srv/p/.refit/artifacts/models/3f/3fa2...c1.joblib is corrupt: ...")
    # -> "artifact models/3f/3fa2...c1.joblib is corrupt: ..."

A path or URL that ends in an artifact key (`models/3f/<sha256>.joblib`) is shortened to the key,
which names the file within the store and nothing of the store; any other URL (`s3://...`,
`http://...`, `postgresql://...`) or absolute path becomes a placeholder. Every message a
server shows a client about a load failure, and every unexpected error it answers, goes
through `for_clients` (a load failure through `public_reason`); the log keeps the full message.
"""

from __future__ import annotations

import re

from refit.errors import ArtifactCorruptError, ArtifactError, NotFoundError, RefitError

_KEY = r"[A-Za-z_]\w*/[0-9a-f]{2}/[0-9a-f]{64}(?:\.[A-Za-z0-9]+)*"
_TOKEN = r"[^\s'\"(),;<>\[\]{}]"
# A path or URL ending in an artifact key: with a scheme, absolute, or a bucket-relative
# `bucket/prefix/...` as s3fs reports it.
_KEYED = re.compile(rf"{_TOKEN}*?({_KEY})(?![\w/])")
_URL = re.compile(rf"\b[A-Za-z][A-Za-z0-9+.-]*://{_TOKEN}+")
_PATH = re.compile(rf"(?<![\w/.:~-])(?:~|[A-Za-z]:)?/{_TOKEN}*[\w.~-]")

URL_SHOWN = "<url>"
PATH_SHOWN = "<path>"
LONGEST = 1000
"""Characters of a message shown at most (the rest is in the log), which also bounds the work
of the patterns above."""


def for_clients(message: str) -> str:
    """`message` with artifact paths cut to their key and every other URL or absolute path
    replaced by `<url>` or `<path>`, cut to `LONGEST` characters."""
    if len(message) > LONGEST:
        message = message[: LONGEST - 3] + "..."
    text = _KEYED.sub(lambda m: m.group(1), message)
    text = _URL.sub(URL_SHOWN, text)
    return _PATH.sub(PATH_SHOWN, text)


def public_reason(exc: BaseException) -> str:
    """A load failure as a client may read it: the kind of failure, then its message through
    `for_clients`, e.g. "artifact corrupt: artifact models/3f/...joblib is corrupt: ..."."""
    kind = next((word for cls, word in _KINDS if isinstance(exc, cls)), type(exc).__name__)
    return f"{kind}: {for_clients(str(exc))}"


_KINDS: tuple[tuple[type[BaseException], str], ...] = (
    (ArtifactCorruptError, "artifact corrupt"),
    (NotFoundError, "artifact missing"),
    (ArtifactError, "artifact error"),
    (RefitError, "refused"),
)
