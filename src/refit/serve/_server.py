"""refit's own uvicorn runner: one worker or a supervisor of several, shutting down without
losing a request.

    run(DrainingConfig("pkg.main:app", factory=True, workers=2, drain_delay=5.0,
                       timeout_graceful_shutdown=25))

On SIGTERM a worker calls the app's drain callback (readiness turns 503 "draining"), keeps
accepting and answering for `drain_delay` seconds with `Connection: close` on every response,
so that load balancers stop sending and keep-alive clients reconnect elsewhere, then closes
its listener, waits for the requests in flight (the config's `timeout_graceful_shutdown`) and
exits 0. The connections the kernel has queued are accepted during the delay, never reset.
SIGINT (Ctrl-C) skips the delay. The app offers its callback in its lifespan state, under
`ON_DRAIN`.

The listening socket is bound first; a worker loads its app (and the app its model, in its
lifespan) before it takes a connection from it, so the connections that arrive meanwhile wait
in the kernel's queue or go to the other workers. With several workers each dies with their
supervisor (`PR_SET_PDEATHSIG` on Linux), so that no orphan holds the port. Extra uvicorn
settings (limits, timeouts) are plain `Config` keyword arguments.
"""

from __future__ import annotations

import ctypes
import logging
import os
import pickle
import signal
import socket
import sys
import time
from types import FrameType
from typing import Any

from uvicorn import Config, Server
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors.multiprocess import Multiprocess, Process

ON_DRAIN = "refit.on_drain"
"""The lifespan state key of the callable a server calls when it starts draining."""

_CLOSE = (b"connection", b"close")
_PR_SET_PDEATHSIG = 1  # linux/prctl.h
_PING_STEP = 0.05
_PARENT_GONE = signal.SIGINT
"""What a worker receives when its supervisor dies: a shutdown without the drain delay (no
load balancer waits on an orphan), finishing the requests in flight."""

log = logging.getLogger("refit.serve")


class DrainingConfig(Config):
    """A uvicorn `Config` that also carries the drain delay to every worker (it is pickled
    into each worker process)."""

    def __init__(self, app: Any, *, drain_delay: float = 0.0, **options: Any) -> None:
        super().__init__(app, **options)
        self.drain_delay = drain_delay


class DrainingServer(Server):
    """A uvicorn server that, on SIGTERM, answers on for the drain delay before it stops."""

    config: DrainingConfig

    def __init__(self, config: DrainingConfig) -> None:
        super().__init__(config)
        self.drain_until: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Runs as the signal handler: it only sets flags, the event loop acts on them. The
        # signal is not recorded to be raised again after the shutdown (uvicorn's way), so a
        # server that drained as asked exits 0.
        if sig == signal.SIGTERM and not self.should_exit:
            if self.drain_until is None:
                self.drain_until = time.monotonic() + self.config.drain_delay
                self._close_every_answer()
            return  # a second SIGTERM (its supervisor passing it on) changes nothing
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        self.should_exit = True

    async def on_tick(self, counter: int) -> bool:
        should_exit = await super().on_tick(counter)  # may rebuild the default headers
        if self.drain_until is None or should_exit:
            return should_exit
        self._close_every_answer()
        on_drain = self.lifespan.state.get(ON_DRAIN)
        if on_drain is not None:
            self.lifespan.state.pop(ON_DRAIN)
            on_drain()
            left = max(0.0, self.drain_until - time.monotonic())
            log.info("draining: not ready, answering for %.1f s more, then stopping", left)
        for connection in self.server_state.connections:
            cycle = getattr(connection, "cycle", None)
            if cycle is not None and not cycle.response_complete:
                cycle.keep_alive = False  # a request begun before SIGTERM ends its connection
        if time.monotonic() >= self.drain_until:
            self.should_exit = True
            return True
        return False

    def _close_every_answer(self) -> None:
        headers = self.server_state.default_headers
        if _CLOSE not in headers:
            self.server_state.default_headers = [*headers, _CLOSE]


class _Worker(Process):
    """A worker process that runs a `DrainingServer` and dies with the process that started it."""

    def __init__(self, config: Config, sockets: list[socket.socket]) -> None:
        self.supervisor = os.getpid()
        super().__init__(config, sockets)

    @property
    def server(self) -> Server:
        if self._server is None:
            assert isinstance(self.config, DrainingConfig)
            self._server = DrainingServer(self.config)
        return self._server

    def _healthcheck(self, timeout: float) -> bool | None:
        # uvicorn waits for the answer to its ping for the whole timeout (refit's is long: a
        # worker answers from a thread, but may be loading a model), and a worker that dies
        # between the ping and its answer never closes the pipe (the supervisor holds both
        # ends): it would be replaced only after that timeout. Here a dead worker is seen at
        # once.
        deadline = time.monotonic() + timeout
        try:
            self.parent_conn.send(b"ping")
            while not self.parent_conn.poll(_PING_STEP):
                if not self.process.is_alive() or time.monotonic() > deadline:
                    return None
            started: bool = self.parent_conn.recv()
        except (OSError, EOFError, pickle.UnpicklingError):
            return None
        return started

    def target(self, sockets: list[socket.socket] | None = None) -> None:  # pragma: no cover
        die_with_parent(self.supervisor)
        super().target(sockets)


class _Supervisor(Multiprocess):
    """uvicorn's supervisor (restarting dead workers; SIGHUP, SIGTTIN, SIGTTOU as documented
    by uvicorn), starting `_Worker`s. Its steps that start workers are uvicorn's, with
    `_Worker` for `Process`.

    Every worker is started from the main thread, which matters: the parent-death signal is
    sent when the thread that started a process ends."""

    def init_processes(self) -> None:
        for _ in range(self.processes_num):
            self.processes.append(self._start())

    def keep_subprocess_alive(self) -> None:
        if self.should_exit.is_set():
            return
        for idx, process in enumerate(self.processes):
            if process.is_alive(timeout=self.config.timeout_worker_healthcheck):
                continue
            process.kill()  # hung, or dead already
            process.join()
            if process.exitcode == STARTUP_FAILURE:
                # It failed before it served: every replacement would fail the same way.
                log.error("worker %s failed to start; stopping the server", process.pid)
                self.should_exit.set()
                return
            if self.should_exit.is_set():
                return
            log.warning("worker %s died (exit code %s); starting another", *_ended(process))
            self.processes[idx] = self._start()

    def restart_all(self) -> None:
        """Replace each worker, its successor ready (model loaded) before it is stopped."""
        for idx, old in enumerate(self.processes):
            if self.should_exit.is_set():
                return
            new = self._start()
            if not new.wait_until_ready(self.config.timeout_worker_healthcheck, self.should_exit):
                new.kill()
                new.join()
                if not self.should_exit.is_set():
                    log.error("worker %s not ready in time; keeping %s", new.pid, old.pid)
                return
            old.terminate()
            old.join()
            self.processes[idx] = new

    def handle_ttin(self) -> None:
        self.processes_num += 1
        self.processes.append(self._start())

    def _start(self) -> Process:
        process = _Worker(self.config, self.sockets)
        process.start()
        return process


def _ended(process: Process) -> tuple[int | None, int | None]:
    return process.pid, process.exitcode


def die_with_parent(parent: int) -> None:
    """Have this process signalled when `parent` ends, and end now if it already has (it may
    have died before the request took effect). Linux only; elsewhere nothing."""
    if sys.platform != "linux":
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, int(_PARENT_GONE), 0, 0, 0) != 0:
        log.warning("cannot ask to end with the supervisor: errno %d", ctypes.get_errno())
    if os.getppid() != parent:
        os._exit(0)


def run(config: DrainingConfig) -> bool:
    """Serve `config` until a signal ends it: in this process with one worker, else under a
    supervisor of `config.workers`. The listening socket is bound first (uvicorn's bind
    errors exit 3, logged). False when a single server failed to start."""
    sock = config.bind_socket()
    if config.workers > 1:
        _Supervisor(config, sockets=[sock]).run()
        return True
    server = DrainingServer(config)
    server.run(sockets=[sock])
    return server.started
