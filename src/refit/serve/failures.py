"""What went wrong in a request, protocol-neutral: the one table from exception to answer.

    failure = failure_of(exc)        # Failure(status, code, message, problems, headers)
    response = codec.error(failure)  # each protocol writes its own body from it

An exception is looked up by its class, then by each of its bases in turn (as Starlette finds
an exception handler), so a new error class answers as its nearest listed base does. Every
protocol (refit's routes, Open Inference V2, MLflow's `/invocations`) answers from this one
table; none maps an exception itself. Messages that may say where the server's stores are go
through `refit.redaction.for_clients`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

from refit.errors import (
    InputError,
    NotFoundError,
    RefitError,
    RequestError,
    ServiceUnavailableError,
)
from refit.redaction import for_clients
from refit.serve._head import allow_head
from refit.serve.records import explain

UNEXPECTED = "internal"
"""The code of an error nothing expected (a bug): the one kind of failure logged in full."""


@dataclass(frozen=True)
class Failure:
    """A request's failure as every protocol answers it: `status` and refit's `code`, the
    `message`, the `problems` of an input (JSON-ready), and `summary`, one line that names
    those problems too (for protocols whose error is a message)."""

    status: int
    code: str
    message: str
    problems: list[dict[str, Any]] | None = None
    headers: Mapping[str, str] | None = None
    summary: str = ""

    @property
    def line(self) -> str:
        """The message in one line, with the problems when there are any."""
        return self.summary or self.message


def _input(exc: InputError) -> Failure:
    problems = [asdict(p) for p in exc.problems]
    return Failure(exc.status, exc.code, exc.message, problems, summary=explain(exc))


def _request(exc: RequestError) -> Failure:
    return Failure(exc.status, exc.code, exc.message)


def _unavailable(exc: ServiceUnavailableError) -> Failure:
    # It may say why a load failed: where the stores are stays in the log.
    return Failure(503, exc.code, for_clients(exc.message), headers={"Retry-After": "1"})


def _not_found(exc: NotFoundError) -> Failure:
    return Failure(404, "not_found", exc.message)


def _http(exc: HTTPException) -> Failure:
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return Failure(exc.status_code, code, str(exc.detail), headers=allow_head(exc.headers))


def _validation(exc: RequestValidationError) -> Failure:
    errors = list(exc.errors())
    problems = [{"field": ".".join(str(p) for p in e["loc"]), "problem": e["msg"]} for e in errors]
    return Failure(422, "invalid_input", "invalid request", problems, summary=invalid(errors))


def _refit(exc: RefitError) -> Failure:
    # The server's own failure: where its stores are stays in the log.
    return Failure(500, "error", for_clients(exc.message))


def _unexpected(exc: Exception) -> Failure:
    return Failure(500, UNEXPECTED, "internal server error")


FAILURES: dict[type[Exception], Callable[[Any], Failure]] = {
    InputError: _input,
    RequestError: _request,
    ServiceUnavailableError: _unavailable,
    NotFoundError: _not_found,
    RefitError: _refit,
    HTTPException: _http,
    RequestValidationError: _validation,
    Exception: _unexpected,
}
"""How each kind of exception is answered, by class (the nearest listed base wins)."""


def failure_of(exc: Exception) -> Failure:
    """The answer to `exc`, from `FAILURES`."""
    for cls in type(exc).__mro__:
        answer = FAILURES.get(cls)
        if answer is not None:
            return answer(exc)
    return _unexpected(exc)  # a BaseException that is no Exception never gets here


def invalid(errors: Any) -> str:
    """One line naming pydantic's (or FastAPI's) validation errors."""
    shown = []
    for error in list(errors)[:10]:
        place = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error["loc"])
        shown.append(f"{place.lstrip('.') or 'the body'}: {error['msg']}")
    return "invalid inference request: " + "; ".join(shown)
