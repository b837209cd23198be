"""The wire formats of the server's protocols, one codec each, over one inference core.

A codec reads a request's body into checked columns, writes `Predictions` as its protocol's
answer, and writes a `Failure` (`refit.serve.failures`) as its protocol's error:

- `refit`: refit's own routes, `{"error": {"code", "message", "problems"?}}`;
- `v2`: the Open Inference Protocol (KServe V2), `{"error": "..."}`;
- `mlflow`: MLflow's scoring protocol (SageMaker's), `{"error_code", "message"}`.

Every JSON body is written by orjson (`JSONBody`).
"""

from __future__ import annotations

import json
from typing import Any

import orjson
from starlette.responses import Response


class JSONBody(Response):
    """JSON by orjson, several times faster than the standard library. A body that echoes a
    lone surrogate (JSON lets a client send one; UTF-8 cannot encode it) is escaped to ASCII
    by the standard library instead."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        try:
            return orjson.dumps(content)
        except orjson.JSONEncodeError:
            return json.dumps(content, allow_nan=False, separators=(",", ":")).encode("ascii")
