"""Leases in the registry (who runs a job now), on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import threading
import time
from datetime import datetime

import pytest

from refit.registry import Registry
from refit.registry.jobs import acquire_lease, lease_holder, release_lease
from refit.registry.tables import LeaseRow

LEASE = "demo:ingest"


def expires_at(registry: Registry, name: str = LEASE) -> datetime:
    with registry.read() as s:
        return s.get_one(LeaseRow, name).expires_at


def wait_until_lapsed(registry: Registry, name: str = LEASE, deadline: float = 10.0) -> None:
    end = time.monotonic() + deadline
    while lease_holder(registry, name) is not None:
        assert time.monotonic() < end, "the lease never lapsed"
        time.sleep(0.05)


def test_a_free_lease_is_taken(registry: Registry) -> None:
    assert lease_holder(registry, LEASE) is None
    assert acquire_lease(registry, LEASE, "a", 30)
    assert lease_holder(registry, LEASE) == "a"
    assert lease_holder(registry, "demo:train") is None  # leases are per name


def test_another_holder_is_refused_while_the_lease_runs(registry: Registry) -> None:
    assert acquire_lease(registry, LEASE, "a", 30)
    assert not acquire_lease(registry, LEASE, "b", 30)
    assert lease_holder(registry, LEASE) == "a"


def test_the_holder_renews_its_lease(registry: Registry) -> None:
    assert acquire_lease(registry, LEASE, "a", 1)
    first = expires_at(registry)
    assert acquire_lease(registry, LEASE, "a", 60)
    assert (expires_at(registry) - first).total_seconds() > 50
    assert lease_holder(registry, LEASE) == "a"
    assert not acquire_lease(registry, LEASE, "b", 30)


def test_an_expired_lease_goes_to_the_next_holder(registry: Registry) -> None:
    assert acquire_lease(registry, LEASE, "a", 0.3)
    assert not acquire_lease(registry, LEASE, "b", 30)
    wait_until_lapsed(registry)
    assert acquire_lease(registry, LEASE, "b", 30)
    assert lease_holder(registry, LEASE) == "b"
    # The old holder, back from the dead, does not get it back.
    assert not acquire_lease(registry, LEASE, "a", 30)


def test_release_frees_the_lease(registry: Registry) -> None:
    assert acquire_lease(registry, LEASE, "a", 30)
    release_lease(registry, LEASE, "a")
    assert lease_holder(registry, LEASE) is None
    assert acquire_lease(registry, LEASE, "b", 30)
    assert lease_holder(registry, LEASE) == "b"


def test_release_by_another_holder_does_nothing(registry: Registry) -> None:
    assert acquire_lease(registry, LEASE, "a", 30)
    release_lease(registry, LEASE, "b")
    release_lease(registry, "demo:train", "a")  # a lease nobody holds: nothing to do
    assert lease_holder(registry, LEASE) == "a"
    assert not acquire_lease(registry, LEASE, "b", 30)


@pytest.mark.parametrize("state", ["free", "expired"])
def test_racing_holders_have_exactly_one_winner(registry: Registry, state: str) -> None:
    if state == "expired":
        assert acquire_lease(registry, LEASE, "dead", 0.2)
        wait_until_lapsed(registry)
    holders = [f"h{i}" for i in range(8)]
    won: list[str] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(holders))

    def race(holder: str) -> None:
        barrier.wait()
        try:
            if acquire_lease(registry, LEASE, holder, 30):
                won.append(holder)
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=race, args=(h,)) for h in holders]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(won) == 1
    assert lease_holder(registry, LEASE) == won[0]
