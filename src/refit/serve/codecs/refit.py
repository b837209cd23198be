"""refit's own wire format: a record or `{"records": [...]}` in, and

    {"model", "version", "id", "prediction", "probabilities"?, "distances"?, "score"?}
    {"model", "version", "id", "predictions", "probabilities"?, "distances"?, "scores"?,
     "withheld"?}                                                 a batch
    {"accepted"}                                                  feedback taken
    {"error": {"code", "message", "problems"?}}                   any error

`id` is the request's id (`X-Request-Id`), which feedback names. A clustering answers its
cluster id and `distances` (`{cluster: distance}`, k-means), a mixture `probabilities`; an
anomaly detector its flag (`prediction`: true for an anomaly) and `score`. A record whose
answer the version's `postprocess` withheld answers `"prediction": null, "withheld": true`
and nothing else of it; in a batch, that row's entries are null and `withheld` lists the rows
withheld (only when there are some).

Records are read and checked by `refit.serve.records.RecordReader`.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from refit.predictions import Predictions
from refit.serve.codecs import JSONBody, blanked, scores_field, scores_of, withheld_rows
from refit.serve.failures import Failure


def answer(
    name: str, version: int, request_id: str, predictions: Predictions, batch: bool
) -> Response:
    """The answer to a record (`batch` false) or to a batch of records."""
    body: dict[str, Any] = {"model": name, "version": version, "id": request_id}
    labels, maps = predictions.label_list(), predictions.probability_maps()
    if predictions.scores is None and predictions.withheld is None:  # the common case
        if batch:
            body["predictions"] = labels
            if maps is not None:
                body["probabilities"] = maps
        else:
            body["prediction"] = labels[0]
            if maps is not None:
                body["probabilities"] = maps[0]
        return JSONBody(body)
    withheld = withheld_rows(predictions)
    scores, field = scores_of(predictions), scores_field(predictions)
    if not batch:
        if withheld:
            return JSONBody({**body, "prediction": None, "withheld": True})
        body["prediction"] = labels[0]
        if maps is not None:
            body["probabilities"] = maps[0]
        if scores is not None:
            body[field] = scores[0]
        return JSONBody(body)
    body["predictions"] = blanked(labels, withheld)
    if maps is not None:
        body["probabilities"] = blanked(maps, withheld)
    if scores is not None:
        body["scores" if field == "score" else field] = blanked(scores, withheld)
    if withheld:
        body["withheld"] = withheld
    return JSONBody(body)


def accepted(count: int) -> Response:
    """The answer to feedback: how many items were taken."""
    return JSONBody({"accepted": count}, status_code=202)


def error_body(code: str, message: str, problems: list[Any] | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if problems is not None:
        error["problems"] = problems
    return {"error": error}


def error(failure: Failure) -> Response:
    body = error_body(failure.code, failure.message, failure.problems)
    return JSONBody(body, status_code=failure.status, headers=failure.headers)
