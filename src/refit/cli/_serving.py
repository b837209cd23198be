"""What `refit status` says of the servers, from their heartbeats (`refit.registry.heartbeats`):
"production is v4, serving v3 (2 servers) because v4 failed to load: ..."."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any

from refit.registry.heartbeats import STALE_SECONDS, is_stale
from refit.registry.tables import ServerRow, utcnow


def serving_line(
    production: int | None, servers: list[ServerRow], now: datetime | None = None
) -> str:
    """One sentence: the version holding production, the versions the live servers serve,
    and why they differ (the reason a server reported for refusing production)."""
    now = now or utcnow()
    live = [s for s in servers if not is_stale(s, now)]
    stale = len(servers) - len(live)
    said = "production is not set" if production is None else f"production is v{production}"
    if not live:
        said += f"; no server has reported in the last {STALE_SECONDS:.0f} s"
    else:
        counts = Counter(s.version for s in live)
        # The most common first; ties by version, newest first ("not serving yet" last).
        order = sorted(counts, key=lambda v: (-counts[v], -(v or 0)))
        said += ", serving " + ", ".join(f"{_served(v)} ({_servers(counts[v])})" for v in order)
        said += _because(production, live)
    if stale:
        said += f" ({_servers(stale)} stale: not seen for over {STALE_SECONDS:.0f} s)"
    return said


def server_dicts(servers: list[ServerRow], now: datetime | None = None) -> list[dict[str, Any]]:
    """The heartbeats for `refit status --json`."""
    now = now or utcnow()
    return [
        {
            "instance": s.instance,
            "host": s.host,
            "pid": s.pid,
            "started_at": s.started_at,
            "seen_at": s.seen_at,
            "stale": is_stale(s, now),
            "version": s.version,
            "refused_version": s.refused_version,
            "refused_error": s.refused_error,
        }
        for s in servers
    ]


def _because(production: int | None, live: list[ServerRow]) -> str:
    if production is None:
        return ""
    refusing = [s for s in live if s.refused_version == production and s.refused_error]
    if any(s.version != production for s in live):
        if refusing:
            return f" because v{production} failed to load: {refusing[0].refused_error}"
        return f"; v{production} is not loaded everywhere yet"
    if refusing:  # served, but natively: its ONNX file failed
        return f", natively: {refusing[0].refused_error}"
    return ""


def _served(version: int | None) -> str:
    return "nothing yet" if version is None else f"v{version}"


def _servers(count: int) -> str:
    return f"{count} server{'s' if count != 1 else ''}"
