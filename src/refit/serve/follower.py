"""Following an alias: the background task that swaps a server to each newly promoted version.

Every `poll_interval` seconds the follower reads which version holds the alias. When it moved,
the version is loaded off the event loop (`load_predictor`: fetch, verify, load, warm up) and
only then does one assignment make it current. A request holds the `LoadedModel` it started
with, so it finishes on that model; the old one is freed when its last request ends (see
`_settle_heap` for how the garbage collector is kept out of the way). A version that fails to
load is refused and retried with exponential back-off, while the server keeps answering with
what it has.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from refit.artifacts import ArtifactStore
from refit.errors import RefitError
from refit.registry import PRODUCTION, Registry
from refit.serve.predictor import DEFAULT_POLICY, LoadedModel, LoadPolicy, load_predictor

log = logging.getLogger("refit.serve")


@dataclass
class LoadFailure:
    version: int
    error: str
    attempts: int
    retry_at: float

    def describe(self) -> dict[str, object]:
        return {"version": self.version, "error": self.error, "attempts": self.attempts}


class ModelFollower:
    """Keeps `current` at the version that holds `name@alias`."""

    def __init__(
        self,
        registry: Registry,
        store: ArtifactStore,
        name: str,
        *,
        alias: str = PRODUCTION,
        poll_interval: float = 2.0,
        max_backoff: float = 60.0,
        on_swap: Callable[[LoadedModel | None, LoadedModel], None] | None = None,
        on_failure: Callable[[LoadFailure | None], None] | None = None,
        policy: LoadPolicy = DEFAULT_POLICY,
    ) -> None:
        """`on_swap(previous, loaded)` follows each swap; `on_failure(failure)` each refusal,
        and `on_failure(None)` the end of one (a swap, or the alias back on the served
        version). `policy` says which versions may load at all."""
        self.registry = registry
        self.store = store
        self.policy = policy
        self.name = name
        self.alias = alias
        self.poll_interval = poll_interval
        self.max_backoff = max_backoff
        self.current: LoadedModel | None = None
        self.failure: LoadFailure | None = None
        self.last_check: float | None = None
        self._on_swap = on_swap
        self._on_failure = on_failure
        self._settle_due = False

    async def run(self) -> None:
        """Poll until cancelled."""
        while True:
            if self._settle_due:
                self._settle_due = False
                _settle_heap()
            try:
                await self.check()
            except RefitError as exc:
                log.warning("cannot read %s@%s: %s", self.name, self.alias, exc)
            except Exception:
                # Never let one bad poll end the following: the server would stay on its
                # version forever, silently.
                log.exception("checking %s@%s failed", self.name, self.alias)
            await asyncio.sleep(self.poll_interval)

    async def check(self) -> bool:
        """Look at the alias once; load and swap if it moved. True when a swap happened."""
        version = await asyncio.to_thread(self.registry.alias_version, self.name, self.alias)
        self.last_check = time.time()
        if self.current is not None and self.current.version == version:
            # Production is back on the served version: a refused candidate is moot.
            self._clear_failure()
            return False
        if version is None:
            return False
        failure = self.failure
        if (
            failure is not None
            and failure.version == version
            and time.monotonic() < failure.retry_at
        ):
            return False
        try:
            loaded = await asyncio.to_thread(self._load, version)
        except RefitError as exc:
            self._refuse(version, str(exc))
            return False
        except Exception as exc:  # a bug or a surprise in a load step refuses the version too
            self._refuse(version, f"{type(exc).__name__}: {exc}")
            return False
        previous, self.current = self.current, loaded
        self._clear_failure()
        log.info(
            "worker %d serving %s v%d (was %s)",
            os.getpid(),
            self.name,
            loaded.version,
            f"v{previous.version}" if previous else "nothing",
        )
        if self._on_swap is not None:
            self._on_swap(previous, loaded)
        self._settle_due = True  # at the next poll: requests on the old model are over then
        return True

    def _load(self, version: int) -> LoadedModel:
        row = self.registry.get_version(self.name, version)
        contract = self.current.signature if self.current is not None else None
        return load_predictor(row, self.store, contract, self.policy)

    def _clear_failure(self) -> None:
        if self.failure is not None:
            self.failure = None
            if self._on_failure is not None:
                self._on_failure(None)

    def _refuse(self, version: int, error: str) -> None:
        attempts = 1
        if self.failure is not None and self.failure.version == version:
            attempts = self.failure.attempts + 1
        delay = min(self.max_backoff, self.poll_interval * 2 ** (attempts - 1))
        self.failure = LoadFailure(version, error, attempts, time.monotonic() + delay)
        log.error(
            "refused %s v%d (attempt %d, next try in %.0fs): %s",
            self.name,
            version,
            attempts,
            delay,
            error,
        )
        if self._on_failure is not None:
            self._on_failure(self.failure)


def _settle_heap() -> None:
    """A poll after a swap (when the requests that began on the replaced model are over):
    collect what that model left behind, then freeze every object alive (the new model, the
    imported libraries) out of the garbage collector's sight.

    Unfrozen, those ~10^5 objects are scanned by each full collection, which under load comes
    every second or so and stalls every request for ~0.1 s: the p99 of a busy server
    (measured: p99 86 ms at 16 connections, 7.6 ms frozen). Frozen, collections scan only the
    young objects of requests. A frozen object is still freed by reference counting, which
    frees a replaced model when its last request ends; this collection, one ~0.2 s pause per
    swap, reclaims one caught in reference cycles.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()
