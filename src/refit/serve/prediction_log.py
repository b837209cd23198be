"""Prediction logging: what a server answers (and the feedback it is told), kept off the
request path and written in batches to the artifact store, indexed in the registry.

    log = LogBuffer(name, "predictions", ...)      # one per served model and kind
    log.add(answered(request_id, at, version, columns, predictions), rows)   # on the loop
    writer = LogWriter([log, ...]); writer.start() ... writer.close()         # a thread

On the request path a request's rows cost one append of references to a bounded buffer (no
per-row work: the rows are converted to Arrow later, by the writer). A full buffer refuses the
new rows and counts them (`buffer_full`): logging never slows or fails a prediction. The
writer thread writes a buffer when `flush_rows` rows wait in it, or `flush_seconds` after the
oldest of them arrived, and everything at `close()` (the server's shutdown): one Parquet file
per model and version (`refit.prediction_logs`), put in the artifact store in full, then
indexed by one registry transaction (`refit.registry.monitoring.add_log`). When the store or
the registry fails, the rows go back to the buffer as far as it has room (the rest are dropped
and counted, `write_failed`), the writer tries again `flush_seconds` later, and the error is
logged once per streak of failures.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

import pyarrow as pa

from refit.artifacts import ArtifactStore
from refit.prediction_logs import (
    Answered,
    Told,
    answered_rows,
    feedback_table,
    predictions_table,
    to_parquet,
    utc,
)
from refit.registry import Registry
from refit.registry.monitoring import FEEDBACK, PREDICTIONS, add_log
from refit.registry.tables import PredictionLogRow
from refit.serve.metrics import ServerMetrics
from refit.services import Services
from refit.signature import Signature

log = logging.getLogger("refit.serve")

Entry = Answered | Told


def _size(entry: Entry) -> int:
    return entry.size if isinstance(entry, Told) else answered_rows(entry)


def _at(entry: Entry) -> float:
    return entry.at if isinstance(entry, Told) else entry[1]


CLOSE_SECONDS = 10.0
"""How long a server's shutdown waits for its last writes (within Kubernetes' 30 s between
SIGTERM and SIGKILL, after the drain and the requests in flight)."""

BUFFER_FULL, WRITE_FAILED = "buffer_full", "write_failed"
"""Why logged rows were dropped (the `reason` of `refit_prediction_log_dropped_rows_total`)."""


@dataclass(frozen=True)
class Destination:
    """Where a model's logs go: its registry and artifact store, and the id of the server
    process writing them (its heartbeat's)."""

    registry: Registry
    store: ArtifactStore
    instance: str


class LogBuffer:
    """The bounded buffer of one model's log of one kind (predictions: `answered` entries;
    feedback: `Told` ones), at most `capacity` rows; its writer is woken when it should
    write (the first rows, and `flush_rows` rows)."""

    def __init__(
        self,
        name: str,
        kind: str,
        destination: Destination,
        metrics: ServerMetrics,
        *,
        capacity: int,
        flush_rows: int,
        flush_seconds: float,
        sample: float = 1.0,
        signatures: Callable[[int], Signature] | None = None,
    ) -> None:
        """`signatures(version)` gives the signature of a served version (predictions)."""
        self.name = name
        self.kind = kind
        self.destination = destination
        self.capacity = capacity
        self.flush_rows = flush_rows
        self.flush_seconds = flush_seconds
        self.sample = sample
        self.signatures = signatures
        self.wake: threading.Event = threading.Event()
        """Set when the buffer needs its writer's attention (`LogWriter` shares one)."""
        self._lock = threading.Lock()
        self._entries: deque[Entry] = deque()
        self._rows = 0
        self._oldest = 0.0  # time.monotonic() of the oldest entry waiting
        self._not_before = 0.0  # after a failed write: when to try again
        self._failing = False
        self._random = random.random
        self._buffered = metrics.log_buffered.labels(name, kind)
        self._dropped_full = metrics.log_dropped.labels(name, kind, BUFFER_FULL)
        self._dropped_failed = metrics.log_dropped.labels(name, kind, WRITE_FAILED)
        self._written = metrics.log_written.labels(name, kind)
        self._files = metrics.log_files.labels(name, kind)
        metrics.log_capacity.labels(name, kind).set(capacity)
        self._buffered.set(0)

    def sampled(self) -> bool:
        """Whether to log the request being answered (`sample` of them, each wholly or not)."""
        return self.sample >= 1.0 or self._random() < self.sample

    def add(self, entry: Entry, rows: int) -> bool:
        """Keep `entry` (of `rows` rows) for the writer; False when the buffer has no room for
        it, then its rows are dropped and counted. O(1), and never blocks for long: the lock
        is held by the writer only to take the entries out."""
        with self._lock:
            waiting = self._rows
            if waiting + rows > self.capacity:
                full = True
            else:
                full = False
                self._entries.append(entry)
                self._rows = waiting + rows
                if not waiting:
                    self._oldest = time.monotonic()
        if full:
            self._dropped_full.inc(rows)
            return False
        self._buffered.inc(rows)
        if not waiting or (waiting < self.flush_rows <= waiting + rows):
            self.wake.set()
        return True

    @property
    def rows(self) -> int:
        return self._rows

    def due_in(self, now: float) -> float | None:
        """Seconds until this buffer should be written (0: now), None when it holds nothing."""
        if not self._rows:
            return None
        if now < self._not_before:
            return self._not_before - now
        if self._rows >= self.flush_rows:
            return 0.0
        return max(0.0, self._oldest + self.flush_seconds - now)

    def take(self) -> list[Entry]:
        with self._lock:
            entries, self._entries = list(self._entries), deque()
            rows, self._rows = self._rows, 0
        self._buffered.dec(rows)
        return entries

    def write(self, last: bool = False) -> None:
        """Write what the buffer holds, one file per version; with `last` (shutdown), what
        fails is dropped rather than kept."""
        entries = self.take()
        if not entries:
            return
        failed: list[Entry] = []
        for version, group in self._groups(entries):
            rows = _rows(group)
            try:
                table = self._table(version, group)
            except Exception:  # a bug: trying again would fail again
                log.exception("cannot convert %d logged rows of %s", rows, self.name)
                self._dropped_failed.inc(rows)
                continue
            try:
                self._put(version, group, table)
            except Exception as exc:
                if not self._failing:
                    log.error("cannot write the %s log of %s: %s", self.kind, self.name, exc)
                self._failing = True
                failed.extend(group)
            else:
                if self._failing:
                    log.info("the %s log of %s is written again", self.kind, self.name)
                self._failing = False
                self._written.inc(rows)
                self._files.inc()
        if failed:
            self._not_before = time.monotonic() + self.flush_seconds
            if last:
                self._dropped_failed.inc(_rows(failed))
            else:
                self._put_back(failed)

    @staticmethod
    def _groups(entries: list[Entry]) -> list[tuple[int | None, list[Entry]]]:
        """The entries by version (feedback has none): one file each."""
        groups: dict[int | None, list[Entry]] = {}
        for entry in entries:
            version = None if isinstance(entry, Told) else entry[2]
            groups.setdefault(version, []).append(entry)
        return list(groups.items())

    def _table(self, version: int | None, group: list[Entry]) -> pa.Table:
        if version is None:
            return feedback_table(cast(list[Told], group))
        assert self.signatures is not None
        return predictions_table(self.signatures(version), cast(list[Answered], group))

    def _put(self, version: int | None, group: list[Entry], table: pa.Table) -> None:
        where = self.destination
        ref = where.store.put(to_parquet(table), kind=self.kind, suffix=".parquet")
        row = PredictionLogRow(
            name=self.name,
            kind=self.kind,
            version=version,
            instance=where.instance,
            first_at=utc(min(_at(entry) for entry in group)),
            last_at=utc(max(_at(entry) for entry in group)),
            rows=table.num_rows,
            uri=ref.uri,
            sha256=ref.sha256,
            size_bytes=ref.size,
        )
        add_log(where.registry, row)

    def _put_back(self, failed: list[Entry]) -> None:
        """Return failed entries, oldest first, to the front of the buffer as far as it has
        room; the rest are dropped and counted. The sizes are added up before the lock is
        taken: under it, only a search and one C-speed extend."""
        ends = list(itertools.accumulate(_size(entry) for entry in failed))
        with self._lock:
            kept = bisect.bisect_right(ends, self.capacity - self._rows)
            self._entries.extendleft(reversed(failed[:kept]))
            back = ends[kept - 1] if kept else 0
            self._rows += back
            if back:
                self._oldest = time.monotonic()
        self._buffered.inc(back)
        if ends and ends[-1] > back:
            self._dropped_failed.inc(ends[-1] - back)


def _rows(entries: Sequence[Entry]) -> int:
    return sum(_size(entry) for entry in entries)


def model_logs(
    services: Services,
    metrics: ServerMetrics,
    instance: str,
    signatures: Callable[[int], Signature],
) -> tuple[LogBuffer | None, LogBuffer]:
    """The buffers of a model's prediction log (None with `monitor.log: false`, or a sample of
    0) and of its feedback, as its project's `monitor` section sets them; `instance` names the
    server process, `signatures(version)` gives a served version's signature."""
    name, monitor = services.project.spec.name, services.project.spec.monitor
    destination = Destination(services.registry, services.store, instance)

    def buffer(kind: str) -> LogBuffer:
        return LogBuffer(
            name,
            kind,
            destination,
            metrics,
            capacity=monitor.buffer_rows,
            flush_rows=monitor.flush_rows,
            flush_seconds=monitor.flush_seconds,
            sample=monitor.sample if kind == PREDICTIONS else 1.0,
            signatures=signatures,
        )

    log = buffer(PREDICTIONS) if monitor.log and monitor.sample > 0 else None
    return log, buffer(FEEDBACK)


class LogWriter:
    """The thread that writes a server's log buffers when each is due, and all of them at
    `close()`."""

    def __init__(self, buffers: Sequence[LogBuffer]) -> None:
        self.buffers = list(buffers)
        self.wake = threading.Event()
        for buffer in self.buffers:
            buffer.wake = self.wake
        self._stopping = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None and self.buffers:
            self._thread = threading.Thread(target=self._run, name="refit-log-writer", daemon=True)
            self._thread.start()

    def close(self, timeout: float = CLOSE_SECONDS) -> bool:
        """Write what every buffer holds and stop; False when that did not end within
        `timeout` seconds (a store that hangs: the thread is left to end with the process)."""
        self._stopping = True
        self.wake.set()
        thread = self._thread
        if thread is None:
            for buffer in self.buffers:  # never started: write here
                buffer.write(last=True)
            return True
        thread.join(timeout)
        if thread.is_alive():
            waiting = sum(buffer.rows for buffer in self.buffers)
            log.error("the log writer did not finish within %.0f s; %d rows", timeout, waiting)
            return False
        return True

    def _run(self) -> None:
        while not self._stopping:
            self.wake.clear()
            now = time.monotonic()
            for buffer in self.buffers:
                if buffer.due_in(now) == 0.0:
                    self._write(buffer)
            now = time.monotonic()  # what is due next, after those writes
            waits = [due for b in self.buffers if (due := b.due_in(now)) is not None]
            if self._stopping:
                break
            if not waits or min(waits) > 0:
                self.wake.wait(min(waits) if waits else None)
        for buffer in self.buffers:
            self._write(buffer, last=True)

    @staticmethod
    def _write(buffer: LogBuffer, last: bool = False) -> None:
        try:
            buffer.write(last)
        except Exception:  # never let the writer end: the buffers would fill for good
            log.exception("writing the %s log of %s failed", buffer.kind, buffer.name)
