"""A Python client of a refit server, with retries.

    from refit.client import Client

    with Client("http://127.0.0.1:8000") as client:
        client.ready()                                    # True once a model is served
        one = client.predict({"mean_radius": 17.99, ...})
        one.label, one.probabilities, one.version         # "malignant", {...}, 3
        many = client.predict_batch([{...}, {...}])
        many.labels                                       # in record order
        frame = client.predict_frame(df)                  # NaN is sent as null

A request that gets 503 (no model ready yet, or a busy server) or cannot reach the server is
tried again, up to `retries` more times: after the server's `Retry-After` (at most `max_wait`
seconds) or else after `backoff`, 2 x `backoff`, 4 x `backoff`, ... seconds. Predictions
change nothing on the server, so trying one again is safe. Any other error raises
`RefitClientError` at once, carrying the status, code, message and the problems of each field.
"""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx
import numpy as np
import pandas as pd

from refit import __version__
from refit.errors import RefitError

_sleep = time.sleep  # replaced by tests that count the waits


class RefitClientError(RefitError):
    """A request the server refused, or could not be made.

    `status` is the HTTP status (None when no answer came), `code` refit's error code (such as
    `invalid_input`, `not_found`, `unavailable`, or `connection_error`), and `problems` lists
    each bad field as `{"field", "problem", "received", "expected"}`::

        try:
            client.predict({"mean_radius": "big"})
        except RefitClientError as error:
            error.status, error.code       # 422, "invalid_input"
            error.problems[0]["field"]     # "mean_radius"
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str = "error",
        problems: Sequence[Mapping[str, Any]] = (),
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.problems = [dict(problem) for problem in problems]

    def __str__(self) -> str:
        head = f"{self.status} {self.code}" if self.status is not None else self.code
        lines = [f"{head}: {self.message}"]
        for p in self.problems[:10]:
            line = f"  {p.get('field')}: {p.get('problem')}"
            if p.get("problem") != "missing":
                line += f", received {p.get('received')!r}"
            if p.get("expected") is not None:
                line += f", expected {p.get('expected')}"
            lines.append(line)
        if len(self.problems) > 10:
            lines.append(f"  and {len(self.problems) - 10} more")
        return "\n".join(lines)


@dataclass(frozen=True)
class Prediction:
    """The answer for one record: `label`, and a classifier's `probabilities` by class."""

    label: Any
    probabilities: dict[str, float] | None
    model: str
    version: int


@dataclass(frozen=True)
class BatchPrediction:
    """The answers for a batch, in record order."""

    labels: list[Any]
    probabilities: list[dict[str, float]] | None
    model: str
    version: int

    def __len__(self) -> int:
        return len(self.labels)


class Client:
    """A client of one refit server (synchronous; one connection pool; close it, or use it
    as a context manager).

    `model` names the served model to ask (`/v1/models/{model}/...`); by default the server's
    own (`/predict`). `timeout` bounds each attempt, in seconds. `api_key` is sent as
    `Authorization: Bearer KEY` to a server that needs one (a 401 or 403 raises at once).

        with Client("http://127.0.0.1:8000", retries=5) as client:
            client.predict_batch(records).labels
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 0.2,
        max_wait: float = 10.0,
        model: str | None = None,
        transport: httpx.BaseTransport | None = None,
        api_key: str | None = None,
    ) -> None:
        if retries < 0:
            raise ValueError("retries must be 0 or more")
        headers = {"user-agent": f"refit-client/{__version__}"}
        if api_key is not None:
            if not api_key or any(c.isspace() for c in api_key):
                raise ValueError("api_key must be a key as `refit keys create` prints it")
            headers["authorization"] = f"Bearer {api_key}"
        self.base_url = base_url
        self.retries = retries
        self.backoff = backoff
        self.max_wait = max_wait
        self.model = model
        self._http = httpx.Client(
            base_url=base_url,
            timeout=timeout,
            transport=transport,
            headers=headers,
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def _predict_path(self, batch: bool) -> str:
        path = (
            "/predict" if self.model is None else f"/v1/models/{quote(self.model, safe='')}/predict"
        )
        return path + "/batch" if batch else path

    def predict(self, record: Mapping[str, Any]) -> Prediction:
        """Predict one record, `{"feature": value, ...}`."""
        body = self._request("POST", self._predict_path(batch=False), dict(record))
        return Prediction(
            label=body["prediction"],
            probabilities=body.get("probabilities"),
            model=body["model"],
            version=body["version"],
        )

    def predict_batch(self, records: Sequence[Mapping[str, Any]]) -> BatchPrediction:
        """Predict records in one request (at most the server's `serve.max_batch_rows`)."""
        payload = {"records": [dict(record) for record in records]}
        body = self._request("POST", self._predict_path(batch=True), payload)
        return BatchPrediction(
            labels=body["predictions"],
            probabilities=body.get("probabilities"),
            model=body["model"],
            version=body["version"],
        )

    def predict_frame(self, frame: pd.DataFrame) -> BatchPrediction:
        """Predict the rows of a DataFrame whose columns are the features; missing values
        (NaN, None, pd.NA) are sent as null."""
        return self.predict_batch(records_of(frame))

    def models(self) -> list[dict[str, Any]]:
        """What the server serves: each model's served version, signature and metrics."""
        models: list[dict[str, Any]] = self._request("GET", "/v1/models")["models"]
        return models

    def ready(self) -> bool:
        """Whether the server answers predictions now (one attempt, no retries): False
        while it has no model, is draining, or cannot be reached."""
        try:
            response = self._http.get("/health/ready")
        except httpx.TransportError:
            return False
        return response.status_code == 200

    def _request(self, method: str, path: str, payload: Any = None) -> dict[str, Any]:
        attempt = 0
        while True:
            try:
                response = self._http.request(method, path, json=payload)
            except httpx.TransportError as exc:
                if attempt >= self.retries:
                    raise RefitClientError(
                        f"cannot reach {self.base_url} ({type(exc).__name__}: {exc}) after "
                        f"{attempt + 1} attempt{'s' if attempt else ''}",
                        code="connection_error",
                    ) from exc
                wait = self._backoff(attempt)
            else:
                if response.status_code != 503 or attempt >= self.retries:
                    return _answer(response, attempt)
                wait = self._retry_after(response) or self._backoff(attempt)
            _sleep(wait)
            attempt += 1

    def _backoff(self, attempt: int) -> float:
        return float(min(self.backoff * 2**attempt, self.max_wait))

    def _retry_after(self, response: httpx.Response) -> float | None:
        value = response.headers.get("retry-after", "").strip()
        if not value:
            return None
        try:
            seconds = float(value)
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError):
                return None
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            seconds = (when - datetime.now(UTC)).total_seconds()
        if not math.isfinite(seconds):
            return None
        return min(max(seconds, 0.0), self.max_wait)


def records_of(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The rows of `frame` as JSON-ready records: numpy scalars become Python ones, and
    missing values (NaN, None, pd.NA, NaT) become None."""
    names = [str(name) for name in frame.columns]
    return [
        {name: _plain(value) for name, value in zip(names, row, strict=True)}
        for row in frame.itertuples(index=False, name=None)
    ]


def _plain(value: Any) -> Any:
    if value is None or (not isinstance(value, (list, dict, str)) and pd.isna(value)):
        return None
    if isinstance(value, np.generic):
        return value.item()
    return value


def _answer(response: httpx.Response, attempt: int) -> dict[str, Any]:
    """The JSON body of a success, or the server's error as a `RefitClientError`."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.is_success and isinstance(body, dict):
        return body
    if response.is_success:
        raise RefitClientError(
            f"the server answered {response.status_code} with a body that is not a JSON object",
            status=response.status_code,
            code="bad_response",
        )
    code, message, problems = "http_error", response.text.strip()[:500], []
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):  # refit's own shape
        code = str(error.get("code", code))
        message = str(error.get("message", message))
        problems = [p for p in error.get("problems") or [] if isinstance(p, dict)]
    elif isinstance(error, str):  # Open Inference Protocol's shape
        message = error
    message = message or response.reason_phrase
    if response.status_code == 503 and attempt:
        message += f" (after {attempt + 1} attempts)"
    raise RefitClientError(message, status=response.status_code, code=code, problems=problems)
