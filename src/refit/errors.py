"""The one error tree of refit.

Every failure refit reports to a person is one of these. The CLI turns them into one
paragraph and an exit code; the server turns them into a status code and one JSON body.
Nothing here knows about HTTP or the terminal::

    RefitError                      base; `.exit_code` for the CLI
    ├── SpecError                   refit.yaml (or an override) is wrong
    ├── NotFoundError               a snapshot, version or alias that does not exist
    ├── ConflictError               a compare-and-set lost a race (promotion, migration)
    │   └── LeaseHeldError          another run of the same job holds its lease now
    ├── DataError                   the data source or its rows
    │   ├── SourceError             a source cannot be read
    │   └── BatchRefusedError       too many rows of a batch failed validation
    ├── ArtifactError               the artifact store
    │   ├── ArtifactCorruptError    a stored file does not match its recorded sha256
    │   ├── ArtifactPathError       a stored path that leaves the store's root
    │   └── UntrustedVersionError   a version unsigned, wrongly signed, or of a refused format
    ├── TrainingError               a training run failed (the user's code or the data)
    ├── CodeError                   the user's hook (model.features, model.postprocess) failed
    ├── StoreError                  the registry's database cannot be reached or migrated
    │   └── NoRegistryError         a reading command pointed at a registry that does not exist
    ├── AlreadyExistsError          what a command would create is there already
    ├── ListenError                 the server cannot listen on its address (a port in use)
    ├── WaitTimedOutError           what a command waits for did not happen within its timeout
    └── RequestError                a prediction request is at fault (the server answers 4xx)
        ├── InputError              fields missing, unknown, of the wrong type, out of range
        │   └── ModelRefusedError   the model failed on a request's own rows
        ├── MalformedBodyError      the body is not JSON, or not of the expected shape
        └── TooLargeError           the body or the batch is over the configured limit
    ServiceUnavailableError         no verified model is loaded yet, or the server is busy
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class RefitError(Exception):
    """Base class of every error refit reports to a person."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class SpecError(RefitError):
    """The project spec is invalid. `problems` lists each bad field."""

    exit_code = 2

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or []


class NotFoundError(RefitError):
    """Something asked for by name or id does not exist."""

    exit_code = 3


class ConflictError(RefitError):
    """A compare-and-set lost: someone else changed the thing first."""

    exit_code = 4


class LeaseHeldError(ConflictError):
    """Another run of the same job (ingest, train) holds the job's lease now."""


class DataError(RefitError):
    """The data: a source that cannot be read, or rows that fail validation."""

    exit_code = 5


class SourceError(DataError):
    """A data source cannot be read."""


class BatchRefusedError(DataError):
    """Too many rows of a batch failed validation; the whole batch was refused."""


class ArtifactError(RefitError):
    """The artifact store cannot write or read a file."""

    exit_code = 6


class ArtifactCorruptError(ArtifactError):
    """A stored file does not match the sha256 recorded for it."""


class ArtifactPathError(ArtifactError):
    """A stored path is absolute, climbs with `..`, or leads outside the store's root."""


class UntrustedVersionError(ArtifactError):
    """A version that this process may not load: unsigned or wrongly signed while a signing
    key is set, or in an artifact format the configuration refuses."""


class TrainingError(RefitError):
    """A training run failed."""

    exit_code = 7


class CodeError(RefitError):
    """The project's own code that runs with a model (`model.features`, `model.postprocess`)
    raised, or returned what refit cannot use. Training reports it as a `TrainingError`; a
    server fails the one request it ran for (500)."""

    exit_code = 7


class StoreError(RefitError):
    """The registry's database cannot be reached, or its schema cannot be migrated."""

    exit_code = 8


class NoRegistryError(StoreError):
    """A command that only reads was pointed at a SQLite registry file that does not exist."""


class AlreadyExistsError(RefitError):
    """What a command would create is there already (a project, or other files, in its folder)."""

    exit_code = 9


class ListenError(RefitError):
    """The server cannot listen on its address: the port is in use, or the host is not local."""

    exit_code = 10


class WaitTimedOutError(RefitError):
    """What a command waits for did not happen in time: a promoted version not yet served by
    every live server (`refit models promote --wait`)."""

    exit_code = 11


class RequestError(RefitError):
    """A request the server refuses because of the request itself."""

    status = 400
    code = "bad_request"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a request: where, what, what was received and what was expected."""

    field: str
    problem: str
    received: Any = None
    expected: str | None = None


class InputError(RequestError):
    """Fields missing, unknown, of the wrong type or out of range; `problems` names each."""

    status = 422
    code = "invalid_input"

    def __init__(self, problems: list[Problem]) -> None:
        count = len(problems)
        first = problems[0]
        super().__init__(
            f"{count} problem{'s' if count > 1 else ''} with the input; "
            f"first: {first.field}: {first.problem}"
        )
        self.problems = problems


class ModelRefusedError(InputError):
    """The model failed on a request's own rows, predicted apart from any other request's:
    it raised, or answered NaN or an infinity. `problems` names the fields that held missing
    values in those rows, or "the request" when none did."""

    code = "model_refused"

    def __init__(self, message: str, problems: list[Problem]) -> None:
        RequestError.__init__(self, message)
        self.problems = problems


class MalformedBodyError(RequestError):
    """The body is not JSON, or not the shape the endpoint takes."""

    status = 400
    code = "malformed_body"


class TooLargeError(RequestError):
    """The body or the batch is larger than the server's limit."""

    status = 413
    code = "too_large"


class ServiceUnavailableError(RefitError):
    """The server cannot answer now (no verified model yet, or overloaded); retry later."""

    status = 503
    code = "unavailable"
