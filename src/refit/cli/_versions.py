"""How the commands name who acts and show a version (`refit train`, `refit models`)."""

from __future__ import annotations

import getpass
import socket
from typing import Any

from refit.flavors import get_flavor
from refit.registry import ModelVersionRow
from refit.registry.signing import signature_state


def actor() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def native_reason(row: ModelVersionRow) -> str | None:
    """Why a server runs this version natively rather than by ONNX Runtime (None: it does
    not): its conversion failed or disagreed, and the status says how."""
    return get_flavor(row.flavor).native_reason(row)


def version_dict(
    row: ModelVersionRow, aliases: dict[str, int], key: bytes | None = None
) -> dict[str, Any]:
    data = row.to_dict()
    data["aliases"] = sorted(a for a, v in aliases.items() if v == row.version)
    data["signed"] = signature_state(row, key)
    return data
