"""Feedback: the true labels (or values) of answered requests, named by their request ids.

    POST /v1/models/{name}/feedback   {"id": "9f2c...", "value": "malignant"}
                                      {"id": "9f2c...", "row": 2, "value": 131.5}
                                      {"feedback": [{"id": ..., "value": ...}, ...]}
    -> 202 {"accepted": 3}

`id` is the `X-Request-Id` of the request predicted (the `id` of its answer), `row` the row
within it (0 by default: a single record). A value is checked against the served version's
output: a classifier's must be one of its classes (compared as `label_text`, so `1` and `1.0`
are the same class), a regressor's a finite number. One bad item refuses the whole request
(422, each problem named by its place, `feedback[3].value`), so a request is kept whole or not
at all. Accepted items wait in the model's feedback buffer, written like its predictions (see
`refit.serve.prediction_log`), where the monitor joins them to the logged predictions.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from refit.errors import (
    InputError,
    MalformedBodyError,
    Problem,
    ServiceUnavailableError,
    TooLargeError,
)
from refit.prediction_logs import Told, label_text
from refit.serve._json import parse_json
from refit.serve._logging import MAX_REQUEST_ID, is_request_id
from refit.serve._media import JSON_TYPE, content_type, route_path
from refit.serve._routes import CodecRoute, protocol_route
from refit.serve.codecs import refit
from refit.serve.records import MAX_PROBLEMS, clipped, received
from refit.serve.schemas import json_response, ref, refit_errors
from refit.serve.state import ServerState, off_the_loop, read_body
from refit.signature import Output
from refit.spec import Task

FIELDS = ("id", "row", "value")
_SEPARATORS_PER_ITEM = 4  # commas of `{"id": ..., "row": ..., "value": ...},` and a margin


class FeedbackReader:
    """Reads feedback bodies for a model of `output`, at most `max_items` items a request."""

    def __init__(self, output: Output, max_items: int) -> None:
        self.output = output
        self.max_items = max_items
        self.max_separators = (max_items + 1) * _SEPARATORS_PER_ITEM + 1024
        # an anomaly detector's true value is a flag, as its prediction is
        classes = [False, True] if output.task is Task.ANOMALY else output.classes
        self._classes = None if classes is None else {label_text(c) for c in classes}
        if classes is None:
            self._expected = "a finite number"
        else:
            shown = ", ".join(label_text(c) for c in classes[:20])
            more = f" and {len(classes) - 20} more" if len(classes) > 20 else ""
            self._expected = clipped(f"one of the classes {shown}{more}")

    def read(self, body: bytes) -> Told:
        """The checked items of `body` (`InputError` naming each bad one, 413 past the
        limit, 400 when it is not a feedback object)."""
        value = parse_json(body, self.max_separators)
        if not isinstance(value, dict):
            raise MalformedBodyError(
                'expected a JSON object {"id": ..., "value": ...} or {"feedback": [...]}'
            )
        if "feedback" not in value:
            return self._items([value], lambda i: "")
        if len(value) > 1:
            keys = sorted(k for k in value if k != "feedback")[:MAX_PROBLEMS]
            problems = [Problem(clipped(k), "unknown field", None, 'only "feedback"') for k in keys]
            raise InputError(problems)
        items = value["feedback"]
        if not isinstance(items, list):
            raise InputError([Problem("feedback", "wrong type", received(items), "a list")])
        if not items:
            raise InputError([Problem("feedback", "empty batch", [], "at least one item")])
        if len(items) > self.max_items:
            raise TooLargeError(
                f"the feedback has {len(items)} items; this server takes at most "
                f"{self.max_items} per request (serve.max_batch_rows)"
            )
        return self._items(items, lambda i: f"feedback[{i}].")

    def _items(self, items: list[Any], where: Callable[[int], str]) -> Told:
        ids: list[str] = []
        rows: list[int] = []
        values: list[str] = []
        problems: list[Problem] = []
        for i, item in enumerate(items):
            if len(problems) >= MAX_PROBLEMS:
                break
            place = where(i)
            if not isinstance(item, dict):
                problems.append(
                    Problem(
                        place.rstrip(".") or "the body", "wrong type", received(item), "an object"
                    )
                )
                continue
            problems += self._item(item, place, ids, rows, values)
        if problems:
            raise InputError(problems[:MAX_PROBLEMS])
        return Told(time.time(), ids, rows, values)

    def _item(
        self,
        item: dict[str, Any],
        place: str,
        ids: list[str],
        rows: list[int],
        values: list[str],
    ) -> list[Problem]:
        problems = [
            Problem(clipped(place + k), "unknown field", None, "id, row or value")
            for k in item
            if k not in FIELDS
        ][:MAX_PROBLEMS]
        given_id, row, value = item.get("id"), item.get("row", 0), item.get("value")
        if isinstance(row, float) and row.is_integer():  # an integer to JSON Schema: 3.0
            row = int(row)
        if "id" not in item:
            problems.append(Problem(place + "id", "missing", None, "a request id"))
        elif not isinstance(given_id, str) or not is_request_id(given_id):
            problems.append(
                Problem(
                    place + "id",
                    "not a request id",
                    received(given_id),
                    f"the X-Request-Id of an answer: 1 to {MAX_REQUEST_ID} letters, digits "
                    "and ._:-",
                )
            )
        if isinstance(row, bool) or not isinstance(row, int) or not 0 <= row < self.max_items:
            expected = f"a row number from 0 to {self.max_items - 1}"
            problems.append(Problem(place + "row", "not a row", received(row), expected))
        text = None
        if "value" not in item:
            problems.append(Problem(place + "value", "missing", None, self._expected))
        else:
            text = self._value(value)
            if text is None:
                problems.append(
                    Problem(
                        place + "value", "not a value of the model", received(value), self._expected
                    )
                )
        if not problems and text is not None:
            ids.append(given_id)  # type: ignore[arg-type]
            rows.append(row)
            values.append(text)
        return problems

    def _value(self, value: Any) -> str | None:
        """`value` as `label_text` when the model could answer it, else None."""
        if isinstance(value, (dict, list)):
            return None
        if self._classes is not None:
            text = label_text(value)
            return text if text in self._classes else None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, int) and abs(value) > 2**53:
            return None
        return label_text(value)


def feedback_router(state: ServerState) -> tuple[APIRouter, list[CodecRoute]]:
    """The feedback route (documented) and its hot twin."""
    router = APIRouter(route_class=protocol_route(refit.error))
    readers: dict[tuple[str, int], FeedbackReader] = {}

    def reader(name: str) -> FeedbackReader:
        served = state.served(name)
        model = served.current()
        key = (name, model.version)
        found = readers.get(key)
        if found is None or found.output is not model.signature.output:
            found = readers[key] = FeedbackReader(model.signature.output, served.max_batch_rows)
        return found

    @router.post(
        "/v1/models/{name}/feedback",
        summary="The true labels or values of answered requests",
        tags=["feedback"],
        status_code=202,
        responses={
            202: json_response(ref("FeedbackAccepted"), "The items taken"),
            **refit_errors(400, 404, 405, 413, 415, 422, 503),
        },
        openapi_extra={
            "requestBody": {**json_response(ref("Feedback"), "Feedback"), "required": True}
        },
    )
    async def feedback(name: str, request: Request) -> Response:
        content_type(request.headers.get("content-type"), (JSON_TYPE,), route_path(request))
        served = state.served(name)
        read = reader(name)
        body = await read_body(request, state.max_body_bytes)
        told = await off_the_loop(body, read.read)
        buffer = served.feedback
        if buffer is None or not buffer.add(told, told.size):
            raise ServiceUnavailableError(
                f"the feedback of {name} waiting to be written fills its buffer "
                "(monitor.buffer_rows); retry shortly"
            )
        return refit.accepted(told.size)

    return router, [CodecRoute("/v1/models/{name}/feedback", feedback, refit.error)]
