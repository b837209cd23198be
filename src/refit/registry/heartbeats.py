"""Server heartbeats: each server process's row in `servers`, saying what it serves and what it
refused, so that `refit status` can say "production is v4, serving v3 (2 servers) because v4
failed to load: ...".

A server writes its row when what it serves or refuses changes, and otherwise every
`BEAT_SECONDS`; the row keeps since when it serves its version. A row not written for
`STALE_SECONDS` belongs to a server that is gone or stuck: it is shown as stale, and deleted by
the next beat of any server of the model once it is `FORGET_SECONDS` old. A server that stops
cleanly deletes its own row.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select

from refit.registry.registry import Registry
from refit.registry.tables import ServerRow, utcnow

BEAT_SECONDS = 15.0
STALE_SECONDS = 3 * BEAT_SECONDS
FORGET_SECONDS = 3600.0


@dataclass(frozen=True)
class Beat:
    """What one server reports: the version it serves (None before its first load) and the
    version it refused with the reason (or None)."""

    version: int | None
    refused_version: int | None = None
    refused_error: str | None = None


def new_instance() -> str:
    """An id for one server process: `host:pid:random`."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def beat(registry: Registry, instance: str, name: str, report: Beat) -> None:
    """Write the heartbeat of `instance` (a server of model `name`), and forget the rows of
    that model's servers not seen for `FORGET_SECONDS`."""
    now = utcnow()
    with registry.write() as s:
        row = s.get(ServerRow, instance)
        if row is None:
            row = ServerRow(
                instance=instance,
                name=name,
                host=socket.gethostname(),
                pid=os.getpid(),
                started_at=now,
            )
            s.add(row)
        row.seen_at = now
        if row.serving_since is None or row.version != report.version:
            row.serving_since = now if report.version is not None else None
        row.version = report.version
        row.refused_version = report.refused_version
        row.refused_error = report.refused_error
        forgotten = now - timedelta(seconds=FORGET_SECONDS)
        s.execute(delete(ServerRow).where(ServerRow.name == name, ServerRow.seen_at < forgotten))


def forget(registry: Registry, instance: str) -> None:
    """Delete the row of a server that stops."""
    with registry.write() as s:
        s.execute(delete(ServerRow).where(ServerRow.instance == instance))


def list_servers(registry: Registry, name: str) -> list[ServerRow]:
    """The heartbeats of model `name`'s servers, most recently seen first."""
    with registry.read() as s:
        query = select(ServerRow).where(ServerRow.name == name).order_by(ServerRow.seen_at.desc())
        return list(s.scalars(query))


def is_stale(row: ServerRow, now: datetime | None = None) -> bool:
    """Whether the server has not written its row for `STALE_SECONDS`."""
    return ((now or utcnow()) - row.seen_at).total_seconds() > STALE_SECONDS
