"""The server's flags and address, as `refit serve`, `refit up` and `refit demo` take them, and
the port of the scheduler's `/metrics` (`refit scheduler`, `refit up`).

Each flag is checked by the rule of its field in the spec (`--port` by `serve.port`'s), when the
command line is read: a bad value is a usage error that names the flag. The address is tried
before any worker starts, and a failed bind inside uvicorn is told the same way, so a port in
use stops the command at once with its own exit code (`ListenError`).
"""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer

from refit.cli._output import checked_by
from refit.errors import ListenError
from refit.spec import Schedule, ServeSpec

HostOption = Annotated[
    str | None,
    typer.Option(
        help="Address to listen on (default serve.host).", callback=checked_by(ServeSpec, "host")
    ),
]
PortOption = Annotated[
    int | None,
    typer.Option(
        help="Port to listen on (default serve.port, 8000).", callback=checked_by(ServeSpec, "port")
    ),
]
MetricsPortOption = Annotated[
    str | None,
    typer.Option(
        metavar="PORT|off",
        help="Port of the scheduler's Prometheus /metrics, on --host (default "
        "schedule.metrics_port, 9464; 0: a free port; off: none).",
        callback=checked_by(Schedule, "metrics_port"),
    ),
]
WorkersOption = Annotated[
    int | None,
    typer.Option(
        help="Server worker processes (default serve.workers, 1).",
        callback=checked_by(ServeSpec, "workers"),
    ),
]


SERVE_PORT = "--port (or serve.port)"
METRICS_PORT = "--metrics-port (or schedule.metrics_port)"
"""Where the scheduler's `/metrics` port is chosen, for `listen_error`."""


def metrics_port(schedule: Schedule, flag: str | None) -> int | None:
    """The scheduler's metrics port: `--metrics-port` read by the rule of
    `schedule.metrics_port`, or that field when the flag is not given (None: no `/metrics`)."""
    if flag is None:
        return schedule.metrics_port
    return Schedule.model_validate({"metrics_port": flag}).metrics_port


def listen_error(host: str, port: int, exc: OSError, port_flag: str = SERVE_PORT) -> ListenError:
    """What a failed bind means to the person who chose the address (the port by
    `port_flag`)."""
    if exc.errno == errno.EADDRINUSE:
        return ListenError(
            f"port {port} on {host} is in use by another process: stop it, or choose another "
            f"port with {port_flag}"
        )
    reason = exc.strerror or str(exc)
    return ListenError(
        f"cannot listen on {host}:{port}: {reason}; give an address of this machine with "
        f"--host (or serve.host) and a free port with {port_flag}"
    )


def check_address(host: str, port: int, port_flag: str = SERVE_PORT) -> None:
    """Raise `ListenError` unless a server could listen on `host:port` now.

    The socket is bound as uvicorn binds it (SO_REUSEADDR, so a port left in TIME_WAIT by a
    server that just stopped is free) and closed at once.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise listen_error(host, port, exc, port_flag) from None


class _BindFailure(logging.Filter):
    """Catches the OSError that uvicorn logs (as the record's message) when a bind fails."""

    def __init__(self) -> None:
        super().__init__()
        self.error: OSError | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, OSError):
            self.error = record.msg
            return False  # refit tells it, once, as a ListenError
        return True


@contextmanager
def bind_failures_reported(host: str, port: int) -> Iterator[None]:
    """Turn uvicorn's exit after a failed bind into a `ListenError`.

    The address may be taken between `check_address` and uvicorn's own bind; uvicorn then logs
    the OSError and exits with status 3, which is refit's "not found".
    """
    caught = _BindFailure()
    logger = logging.getLogger("uvicorn.error")
    logger.addFilter(caught)
    try:
        yield
    except SystemExit as exc:
        if exc.code not in (0, None) and caught.error is not None:
            raise listen_error(host, port, caught.error) from None
        raise
    finally:
        logger.removeFilter(caught)
