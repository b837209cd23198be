"""What `refit status` says of the servers, from their heartbeats (`refit.registry.heartbeats`):
"production is v4, serving v3 (2 servers) because v4 failed to load: ...", and a table of them;
and how `refit models promote --wait` waits until every live server serves the version."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from refit.cli._output import when
from refit.errors import ConflictError, WaitTimedOutError
from refit.registry import PRODUCTION, Registry
from refit.registry.heartbeats import STALE_SECONDS, is_stale, list_servers
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
            "serving_since": s.serving_since,
            "refused_version": s.refused_version,
            "refused_error": s.refused_error,
        }
        for s in servers
    ]


SERVER_COLUMNS = ("server", "host", "pid", "serves", "since", "last seen", "")


def server_rows(servers: list[ServerRow], now: datetime | None = None) -> list[tuple[str, ...]]:
    """One row per server for `refit status`'s table (`SERVER_COLUMNS`), stale ones marked."""
    now = now or utcnow()
    return [
        (
            s.instance,
            s.host,
            str(s.pid),
            _served(s.version),
            when(s.serving_since),
            f"{_ago(now, s.seen_at)} ago",
            "stale" if is_stale(s, now) else "",
        )
        for s in servers
    ]


# --- waiting for a version ------------------------------------------------------------------


@dataclass(frozen=True)
class Rollout:
    """How far `version` has reached: live servers serving it, of all live servers, and the
    reasons those that refused it gave."""

    version: int
    serving: int
    live: int
    refusals: tuple[str, ...] = ()

    @property
    def done(self) -> bool:
        return self.serving == self.live

    def __str__(self) -> str:
        said = f"{self.serving}/{self.live} live servers serve v{self.version}"
        if self.refusals:
            said += f"; refused: {self.refusals[0]}"
        return said


def rollout(version: int, servers: list[ServerRow], now: datetime | None = None) -> Rollout:
    now = now or utcnow()
    live = [s for s in servers if not is_stale(s, now)]
    refusals = tuple(
        f"{s.instance}: {s.refused_error}"
        for s in live
        if s.version != version and s.refused_version == version and s.refused_error
    )
    return Rollout(version, sum(s.version == version for s in live), len(live), refusals)


def wait_until_served(
    registry: Registry,
    name: str,
    version: int,
    timeout: float,
    progress: Callable[[Rollout], None],
    *,
    every: float = 0.5,
) -> Rollout:
    """Wait until every live server of model `name` serves `version` (at once when none is
    live), calling `progress` each time the count changes. Raises `ConflictError` when
    production moves off `version` meanwhile, `WaitTimedOutError` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    shown: Rollout | None = None
    while True:
        state = rollout(version, list_servers(registry, name))
        if state != shown:
            progress(state)
            shown = state
        if state.done:
            return state
        production = registry.alias_version(name, PRODUCTION)
        if production != version:
            held = "nothing" if production is None else f"v{production}"
            raise ConflictError(
                f"{name}@{PRODUCTION} moved to {held} while waiting for v{version} to be served"
            )
        if time.monotonic() >= deadline:
            raise WaitTimedOutError(
                f"{name} v{version} is not served everywhere after {timeout:g} s: {state} "
                "(production holds it; the others still serve what they served)"
            )
        time.sleep(every)


def _ago(now: datetime, then: datetime) -> str:
    seconds = max(0, round((now - then).total_seconds()))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h"


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
