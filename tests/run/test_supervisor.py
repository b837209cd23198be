"""The supervisor behind `refit up`, on tiny Python child processes."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from refit.run.supervisor import Child, CrashLoopError, FatalExitError, Supervisor

DEADLINE = 30.0
"""Generous: the machine is shared, and nothing here should take more than a second or two."""

# Every script prints after it is ready (signal handlers set, grandchildren started), so a test
# that waits for that line knows the child is in the state it wants.
TALKER = """
import sys, time
print("hello", flush=True)
print("to stderr", file=sys.stderr, flush=True)
print("drop me", flush=True)
time.sleep(60)
"""

FLAKY = """
import os, sys, time
marker = sys.argv[1]
first = not os.path.exists(marker)
open(marker, "a").close()
print("first run" if first else "second run", flush=True)
if first:
    sys.exit(3)
while True:
    print("tick", flush=True)
    time.sleep(0.05)
"""

POLITE = """
import signal, sys, time
def bye(*_):
    print("bye", flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, bye)
print("ready", flush=True)
while True:
    time.sleep(0.05)
"""

STUBBORN = """
import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ready", flush=True)
while True:
    time.sleep(0.05)
"""

# A parent that leaves when asked, and a grandchild (in its process group, on the same output)
# that ignores SIGTERM, like a worker stuck in a system call. The grandchild says through a
# pipe of its own when it is ready, and the parent then prints its pid.
GRANDCHILD = """
import os, signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
os.write(int(sys.argv[1]), b"x")
time.sleep(60)
"""

PARENT = """
import os, signal, subprocess, sys, time
code, mode = sys.argv[1:]
ready, tell = os.pipe()
grandchild = subprocess.Popen([sys.executable, "-c", code, str(tell)], pass_fds=[tell])
os.close(tell)
os.read(ready, 1)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
print(f"grandchild {grandchild.pid}", flush=True)
if mode == "crash":
    sys.exit(1)
time.sleep(60)
"""


def python(script: str, *args: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(script), *args]


class Lines:
    """Collects what the supervisor reports, and waits for a line."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []
        self._changed = threading.Condition()

    def __call__(self, name: str, line: str) -> None:
        with self._changed:
            self.seen.append((name, line))
            self._changed.notify_all()

    def of(self, name: str) -> list[str]:
        with self._changed:
            return [line for who, line in self.seen if who == name]

    def wait_for(self, name: str, line: str, count: int = 1) -> None:
        with self._changed:
            arrived = self._changed.wait_for(
                lambda: sum(1 for who, text in self.seen if (who, text) == (name, line)) >= count,
                DEADLINE,
            )
        assert arrived, f"no {line!r} from {name} ({count}x); seen: {self.seen}"

    def wait_for_prefix(self, name: str, prefix: str) -> str:
        with self._changed:
            self._changed.wait_for(
                lambda: any(text.startswith(prefix) for text in self.of(name)), DEADLINE
            )
        found = [text for text in self.of(name) if text.startswith(prefix)]
        assert found, f"no line starting {prefix!r} from {name}; seen: {self.seen}"
        return found[0]


@contextmanager
def supervising(supervisor: Supervisor) -> Iterator[threading.Event]:
    """`supervisor.run` in a thread until the block ends; re-raise what it raised."""
    stop = threading.Event()
    failures: list[BaseException] = []

    def run() -> None:
        try:
            supervisor.run(stop, poll=0.02)
        except BaseException as exc:
            failures.append(exc)

    supervisor.start()
    thread = threading.Thread(target=run)
    thread.start()
    try:
        yield stop
    finally:
        stop.set()
        thread.join(DEADLINE)
        assert not thread.is_alive(), "the supervisor did not stop"
    if failures:
        raise failures[0]


def running(process: subprocess.Popen[str] | None) -> subprocess.Popen[str]:
    assert process is not None and process.poll() is None
    return process


def alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie waiting for a parent to reap it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def wait_dead(pid: int) -> bool:
    end = time.monotonic() + 5
    while alive(pid) and time.monotonic() < end:
        time.sleep(0.02)
    return not alive(pid)


def test_lines_reach_on_line_with_the_child_name() -> None:
    lines = Lines()
    supervisor = Supervisor(
        [
            Child("talker", python(TALKER)),
            Child("quiet", python(TALKER), keep=lambda line: None if "drop" in line else line),
            Child("loud", python(TALKER), keep=str.upper),
        ],
        on_line=lines,
    )
    supervisor.start()
    try:
        lines.wait_for("talker", "drop me")
        lines.wait_for("quiet", "to stderr")
        lines.wait_for("loud", "DROP ME")
    finally:
        supervisor.stop()
    assert lines.of("talker") == ["hello", "to stderr", "drop me"]  # stderr is merged, in order
    assert lines.of("quiet") == ["hello", "to stderr"]  # `keep` dropped a line
    assert lines.of("loud") == ["HELLO", "TO STDERR", "DROP ME"]  # and reworded these


def test_a_child_that_exits_is_restarted_and_keeps_talking(tmp_path: Path) -> None:
    lines = Lines()
    flaky = Child("flaky", python(FLAKY, str(tmp_path / "marker")))
    steady = Child("steady", python(POLITE))
    supervisor = Supervisor([flaky, steady], on_line=lines, backoff=0.05)
    with supervising(supervisor):
        lines.wait_for("flaky", "tick", count=3)
        lines.wait_for("steady", "ready")
        steady_process = running(steady.process)
    said = lines.of("flaky")
    exits = [line for line in said if line.startswith("exited")]
    assert len(exits) == 1 and exits[0].startswith("exited with code 3; restarting in")
    assert [said.count(line) for line in ("first run", "restarting", "second run")] == [1, 1, 1]
    assert said.index(exits[0]) < said.index("restarting") < said.index("second run")
    assert set(said) == {"first run", exits[0], "restarting", "second run", "tick"}
    # The child that did not die was left alone, and was only stopped at the end.
    assert lines.of("steady") == ["ready", "bye"]
    assert steady_process.returncode == 0


def test_a_crash_loop_gives_up_loudly_and_stops_the_others() -> None:
    lines = Lines()
    looping = Child("loop", python("import sys; print('up', flush=True); sys.exit(2)"))
    steady = Child("steady", python(POLITE))
    supervisor = Supervisor([steady, looping], on_line=lines, backoff=0.05, max_restarts=2)
    supervisor.start()
    lines.wait_for("steady", "ready")
    steady_process = running(steady.process)
    stop = threading.Event()
    safety = threading.Timer(DEADLINE, stop.set)  # the test fails, rather than hangs, if no loop
    safety.start()
    try:
        with pytest.raises(
            CrashLoopError, match=r"loop exited 3 times within 60s \(last exit code 2\)"
        ):
            supervisor.run(stop, poll=0.02)
    finally:
        safety.cancel()
        supervisor.stop()
    assert lines.of("loop").count("up") == 3  # started, restarted twice, then no more
    assert lines.of("loop").count("restarting") == 2
    assert steady_process.returncode == 0
    assert lines.of("steady") == ["ready", "bye"]
    assert steady.process is None and looping.process is None


def test_a_fatal_exit_code_stops_everything_at_once_after_the_childs_last_words() -> None:
    lines = Lines()
    failing = Child(
        "serve",
        python("import sys; print('error: port 8000 is in use', flush=True); sys.exit(10)"),
        fatal=frozenset({2, 10}),
    )
    steady = Child("steady", python(POLITE))
    # A back-off and a restart budget that would keep it going for minutes.
    supervisor = Supervisor([steady, failing], on_line=lines, backoff=30.0, max_restarts=100)
    supervisor.start()
    lines.wait_for("steady", "ready")
    steady_process = running(steady.process)
    stop = threading.Event()
    safety = threading.Timer(DEADLINE, stop.set)
    safety.start()
    try:
        with pytest.raises(FatalExitError, match="serve exited with code 10") as raised:
            supervisor.run(stop, poll=0.02)
    finally:
        safety.cancel()
    assert not stop.is_set(), "it gave up at once, not when the test's safety net fired"
    assert (raised.value.child, raised.value.code) == ("serve", 10)
    assert lines.of("serve") == ["error: port 8000 is in use"]  # and no "restarting in"
    assert steady_process.returncode == 0
    assert lines.of("steady") == ["ready", "bye"]


def test_an_exit_code_that_is_not_fatal_is_restarted() -> None:
    lines = Lines()
    looping = Child(
        "loop", python("import sys; print('up', flush=True); sys.exit(1)"), fatal=frozenset({10})
    )
    supervisor = Supervisor([looping], on_line=lines, backoff=0.05, max_restarts=1000)
    with supervising(supervisor):
        lines.wait_for("loop", "restarting", count=2)


def test_crashes_outside_the_window_are_forgiven() -> None:
    lines = Lines()
    looping = Child("loop", python("import sys; print('up', flush=True); sys.exit(2)"))
    # A tiny window: each crash is long forgotten when the next one comes.
    supervisor = Supervisor([looping], on_line=lines, backoff=0.05, max_restarts=1, window=0.01)
    with supervising(supervisor):
        lines.wait_for("loop", "up", count=4)


def test_stop_terminates_children_and_kills_those_that_ignore_it() -> None:
    lines = Lines()
    polite = Child("polite", python(POLITE))
    stubborn = Child("stubborn", python(STUBBORN))
    supervisor = Supervisor([polite, stubborn], on_line=lines, stop_timeout=0.5)
    supervisor.start()
    lines.wait_for("polite", "ready")
    lines.wait_for("stubborn", "ready")
    processes = running(polite.process), running(stubborn.process)
    supervisor.stop()
    assert lines.of("polite") == ["ready", "bye"]
    assert processes[0].returncode == 0
    assert processes[1].returncode == -signal.SIGKILL
    assert polite.process is None and stubborn.process is None


def test_stop_reaches_the_childs_whole_process_group() -> None:
    lines = Lines()
    parent = Child("parent", python(PARENT, textwrap.dedent(GRANDCHILD), "stay"))
    supervisor = Supervisor([parent], on_line=lines, stop_timeout=0.5)
    supervisor.start()
    grandchild = int(lines.wait_for_prefix("parent", "grandchild ").split()[1])
    assert alive(grandchild)
    supervisor.stop()
    assert wait_dead(grandchild), "the grandchild outlived `refit up`"


def test_a_crashed_childs_leftovers_are_stopped_before_the_restart() -> None:
    lines = Lines()
    # It leaves a grandchild behind (a server's worker would hold the port the restart needs).
    crashing = Child("crashing", python(PARENT, textwrap.dedent(GRANDCHILD), "crash"))
    supervisor = Supervisor(
        [crashing], on_line=lines, backoff=0.05, stop_timeout=0.5, max_restarts=1000
    )
    with supervising(supervisor):
        first = int(lines.wait_for_prefix("crashing", "grandchild ").split()[1])
        lines.wait_for("crashing", "restarting")
        assert wait_dead(first), "the crashed child's grandchild was left running"
