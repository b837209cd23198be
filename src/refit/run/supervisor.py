"""The supervisor behind `refit up`: child processes kept running, their news on one screen.

Each child (the scheduler, the server) runs in its own session, so a Ctrl-C reaches only the
supervisor, which then stops the children in order with SIGTERM: the server drains its
in-flight requests, a training run finishes or is recorded as interrupted. A child that dies is
restarted after a back-off that doubles with each crash; a child that crashes more than
`max_restarts` times within `window` seconds is a crash loop, and the supervisor gives up
loudly, stopping everything. So it does at once when a child exits with one of its `fatal`
codes, which say that a restart cannot help (a bad spec, an address in use).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

Line = Callable[[str, str], None]
"""Receives (child name, one line it printed)."""


@dataclass
class Child:
    """A process to keep running: a name for its lines, and the command."""

    name: str
    args: list[str]
    env: dict[str, str] | None = None
    keep: Callable[[str], str | None] = lambda line: line
    """Filter and reword a line of output; None drops it."""
    fatal: frozenset[int] = frozenset()
    """Exit codes after which a restart cannot help: the supervisor stops everything."""
    process: subprocess.Popen[str] | None = field(default=None, repr=False)
    crashes: list[float] = field(default_factory=list, repr=False)
    restart_at: float | None = field(default=None, repr=False)
    reader: threading.Thread | None = field(default=None, repr=False)


class SupervisorError(RuntimeError):
    """The supervisor gave up on a child; `code` is the child's last exit code."""

    def __init__(self, message: str, child: str, code: int) -> None:
        super().__init__(message)
        self.child = child
        self.code = code


class CrashLoopError(SupervisorError):
    """A child exited more than `max_restarts` times within `window` seconds."""


class FatalExitError(SupervisorError):
    """A child exited with one of its `fatal` codes: restarting it cannot help."""


class Supervisor:
    def __init__(
        self,
        children: list[Child],
        *,
        on_line: Line,
        max_restarts: int = 5,
        window: float = 60.0,
        backoff: float = 1.0,
        max_backoff: float = 30.0,
        stop_timeout: float = 60.0,
    ) -> None:
        self.children = children
        self.on_line = on_line
        self.max_restarts = max_restarts
        self.window = window
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.stop_timeout = stop_timeout
        self._readers: list[threading.Thread] = []

    def start(self) -> None:
        for child in self.children:
            self._spawn(child)

    def _spawn(self, child: Child) -> None:
        child.process = subprocess.Popen(
            child.args,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            bufsize=1,
            env=child.env,
            start_new_session=True,
        )
        reader = threading.Thread(target=self._read, args=(child, child.process), daemon=True)
        reader.start()
        child.reader = reader
        self._readers.append(reader)

    def _read(self, child: Child, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        with process.stdout:  # closed at the end, not left to the garbage collector
            for raw in process.stdout:
                line = child.keep(raw.rstrip("\n"))
                if line:
                    self.on_line(child.name, line)

    def check(self) -> None:
        """Restart children that died (after their back-off); raise SupervisorError to give up."""
        now = time.monotonic()
        for child in self.children:
            process = child.process
            if process is None or process.poll() is None:
                if process is None and child.restart_at is not None and now >= child.restart_at:
                    child.restart_at = None
                    self.on_line(child.name, "restarting")
                    self._spawn(child)
                continue
            code = process.returncode
            child.process = None
            _signal_group(process, signal.SIGKILL)  # what it started and left behind
            if child.reader is not None:
                child.reader.join(2)  # its last words (the error) come before ours
            if code in child.fatal:
                raise FatalExitError(
                    f"{child.name} exited with code {code}, which a restart cannot fix",
                    child.name,
                    code,
                )
            child.crashes = [t for t in child.crashes if now - t < self.window] + [now]
            if len(child.crashes) > self.max_restarts:
                raise CrashLoopError(
                    f"{child.name} exited {len(child.crashes)} times within "
                    f"{self.window:.0f}s (last exit code {code}); giving up",
                    child.name,
                    code,
                )
            delay = min(self.max_backoff, self.backoff * 2 ** (len(child.crashes) - 1))
            child.restart_at = now + delay
            self.on_line(child.name, f"exited with code {code}; restarting in {delay:.0f}s")

    def run(self, stop: threading.Event, poll: float = 0.2) -> None:
        """Supervise until `stop` is set; then stop the children. Raises SupervisorError."""
        try:
            while not stop.wait(poll):
                self.check()
        finally:
            self.stop()

    def stop(self) -> None:
        """SIGTERM every child (last started first), wait, SIGKILL what is left.

        A child waits for the processes it started (uvicorn for its workers, the scheduler for
        a training run); any still in its process group once it has exited are killed.
        """
        running = [c.process for c in reversed(self.children) if c.process is not None]
        for process in running:
            _signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        for process in running:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(max(0.1, deadline - time.monotonic()))
            _signal_group(process, signal.SIGKILL)
            process.wait()
        for reader in self._readers:
            reader.join(5)
        for child in self.children:
            child.process = None


def _signal_group(process: subprocess.Popen[str], signum: int) -> None:
    """Signal a child and the processes it started (uvicorn's workers, a training run)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signum)
