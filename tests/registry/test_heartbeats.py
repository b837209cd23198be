"""Server heartbeats in the registry: one row per server process, rewritten at each beat,
deleted when the server stops, forgotten when it has not been seen for an hour."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update

from refit.registry import Registry
from refit.registry.heartbeats import (
    FORGET_SECONDS,
    STALE_SECONDS,
    Beat,
    beat,
    forget,
    is_stale,
    list_servers,
)
from refit.registry.tables import ServerRow, utcnow


def age(registry: Registry, instance: str, seconds: float) -> None:
    """Make a server's last beat `seconds` old."""
    with registry.write() as s:
        seen = utcnow() - timedelta(seconds=seconds)
        s.execute(update(ServerRow).where(ServerRow.instance == instance).values(seen_at=seen))


def test_a_beat_writes_one_row_per_server_and_rewrites_it(registry: Registry) -> None:
    beat(registry, "a", "churn", Beat(None))
    beat(registry, "b", "churn", Beat(3))
    beat(registry, "c", "other", Beat(1))
    beat(registry, "a", "churn", Beat(3, refused_version=4, refused_error="v4 is corrupt"))
    rows = {r.instance: r for r in list_servers(registry, "churn")}
    assert set(rows) == {"a", "b"}
    assert (rows["a"].version, rows["a"].refused_version, rows["a"].refused_error) == (
        3,
        4,
        "v4 is corrupt",
    )
    assert (rows["b"].version, rows["b"].refused_version, rows["b"].refused_error) == (
        3,
        None,
        None,
    )
    assert rows["a"].seen_at >= rows["a"].started_at
    beat(registry, "a", "churn", Beat(4))  # the refusal is over
    again = {r.instance: r for r in list_servers(registry, "churn")}
    assert (again["a"].version, again["a"].refused_version) == (4, None)


def test_a_stopped_server_removes_its_row(registry: Registry) -> None:
    beat(registry, "a", "churn", Beat(3))
    beat(registry, "b", "churn", Beat(3))
    forget(registry, "a")
    assert [r.instance for r in list_servers(registry, "churn")] == ["b"]


def test_rows_not_seen_for_a_while_are_stale_then_forgotten(registry: Registry) -> None:
    beat(registry, "gone", "churn", Beat(2))
    beat(registry, "stuck", "churn", Beat(2))
    beat(registry, "other-model", "other", Beat(1))
    age(registry, "gone", FORGET_SECONDS + 60)
    age(registry, "stuck", STALE_SECONDS + 1)
    age(registry, "other-model", FORGET_SECONDS + 60)
    stale = {r.instance: is_stale(r) for r in list_servers(registry, "churn")}
    assert stale == {"gone": True, "stuck": True}

    beat(registry, "live", "churn", Beat(3))  # any beat forgets its model's old rows
    rows = {r.instance: is_stale(r) for r in list_servers(registry, "churn")}
    assert rows == {"live": False, "stuck": True}
    assert [r.instance for r in list_servers(registry, "other")] == ["other-model"]


def test_a_row_keeps_since_when_its_server_serves_its_version(registry: Registry) -> None:
    beat(registry, "a", "churn", Beat(None))
    (loading,) = list_servers(registry, "churn")
    assert loading.serving_since is None  # nothing served yet

    beat(registry, "a", "churn", Beat(3))
    (first,) = list_servers(registry, "churn")
    assert first.serving_since is not None and first.serving_since >= loading.seen_at

    beat(registry, "a", "churn", Beat(3, refused_version=4, refused_error="v4 is corrupt"))
    (same,) = list_servers(registry, "churn")
    assert same.serving_since == first.serving_since  # still v3, whatever else it says
    assert same.seen_at >= first.serving_since

    beat(registry, "a", "churn", Beat(4))
    (swapped,) = list_servers(registry, "churn")
    assert swapped.serving_since is not None and swapped.serving_since > same.serving_since
    assert swapped.serving_since == swapped.seen_at
