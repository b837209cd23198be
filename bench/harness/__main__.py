"""`bench/run`: refit's inference server against its peers, on this machine, in one command.

    setup    environments (bench/.venvs), wrk, the model trained once through refit
    start    every server on a free 127.0.0.1 port, same workers and thread settings
    check    each answers one record and a 100-record batch exactly as the model does
             (the ASGI floors, which answer a constant: a 2xx status only)
    measure  for each round, for each cell, each server in turn (the order rotates per
             round): a warm-up, then wrk for the cell's duration while /proc is sampled
    report   medians over rounds; refit's ratio to the best scikit-learn peer, to the
             hand-written FastAPI + ONNX Runtime peer and to the floor of Python HTTP;
             refit with prediction logging on against off; granian against uvicorn;
             files in bench/results/
    --profile  instead of servers: where one request's time goes (bench/profile.py)

Exit status: 0 when every server started and answered right; 1 when one did not (or wrk got
no good answer at all in a cell); 2 when the setup failed. Throughput never fails a run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from harness.envs import BENCH, PEERS, SetupError, ensure_envs, ensure_wrk, wrk_version
from harness.load import (
    Expected,
    Measure,
    ServerFailure,
    measure,
    verify,
    wait_quiet,
    wait_ready,
)
from harness.peers import BATCH, ENV_OF, QUICK_SERVERS, SERVERS, SINGLE, Server, make_servers
from harness.report import (
    Cell,
    granian_table,
    hand_written_table,
    logging_table,
    ratio_table,
    results_table,
    summarise,
)
from harness.servers import base_environment

CELLS = [
    Cell("1 row, c=1", "single", 1),
    Cell("1 row, c=16", "single", 16),
    Cell("1 row, c=64", "single", 64),
    Cell("100 rows, c=8", "batch", 8),
]
QUICK_CELLS = [CELLS[0], CELLS[3]]
SHAPES = {"single": SINGLE, "batch": BATCH}
QUIET_LIMIT = 0.3
"""Cores that other work on the machine may use before a measure waits for it (--quiet-wait)."""
QUIET_BUDGET = 180.0
"""Seconds of such waiting in a whole run, at most."""


def say(message: str) -> None:
    # When nobody reads stderr any more (a closed pipe), the run goes on.
    with contextlib.suppress(OSError):
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def options(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/run", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 1 round, 2 s per cell, cells 1 row c=1 and 100 rows c=8",
    )
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 3; quick 1)")
    parser.add_argument(
        "--duration", type=int, help="seconds measured per cell (default 8; quick 2)"
    )
    parser.add_argument(
        "--warmup", type=int, help="seconds of warm-up before each (default 2; quick 1)"
    )
    parser.add_argument(
        "--quiet-wait",
        type=int,
        help="before each measure, wait up to this many seconds for other work "
        "on the machine to drop under 0.3 cores, at most 3 min in all "
        "(default 15; quick 0)",
    )
    parser.add_argument(
        "--workers", type=int, default=2, help="worker processes of every server (default 2)"
    )
    parser.add_argument(
        "--servers",
        help=f"comma-separated subset of the servers: {', '.join(SERVERS)} "
        "(default: all; quick: all but the granian ones)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="no servers: profile one request through refit's app and the fastapi-onnx peer's "
        "app in process (bench/profile.py), after the same setup",
    )
    parser.add_argument(
        "--out", type=Path, help="folder for this run's files (default bench/results/<UTC time>)"
    )
    args = parser.parse_args(argv)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.duration = args.duration or (2 if args.quick else 8)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    if args.quiet_wait is None:
        args.quiet_wait = 0 if args.quick else 15
    args.cells = QUICK_CELLS if args.quick else CELLS
    default = QUICK_SERVERS if args.quick else SERVERS
    chosen = args.servers.split(",") if args.servers else default
    args.servers = [s.strip() for s in chosen if s.strip()]
    unknown = [s for s in args.servers if s not in ENV_OF]
    if unknown:
        parser.error(f"unknown server {', '.join(unknown)}; expected some of {', '.join(ENV_OF)}")
    return args


def prepare_model(envs: dict, work: Path, logs: Path) -> tuple[dict, Expected, list[dict]]:
    """Train through refit, export the artifact; the records and what the model says of them."""
    say("training the model through refit (refit init/ingest/train), and a no-op version")
    done = subprocess.run(
        [str(envs["refit"].python), str(PEERS / "refit" / "prepare.py"), str(work)],
        env=base_environment(),
        capture_output=True,
        text=True,
        check=False,
    )
    (logs / "prepare.log").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise SetupError(f"training the benchmark model failed:\n{done.stderr[-3000:]}")
    info = json.loads(done.stdout)
    records = json.loads((work / "records.json").read_text())
    expected = Expected(**json.loads((work / "expected.json").read_text()))
    return info, expected, records


def noop_expected(expected: Expected, n: int) -> Expected:
    k = len(expected.classes)
    return Expected(expected.classes, [expected.classes[0]] * n, [[1.0] + [0.0] * (k - 1)] * n)


def expected_of(server: Server, expected: Expected) -> Expected | None:
    """What `server` must answer: the model's predictions, the no-op model's, or (the floor's
    constant answer) nothing but a 2xx status."""
    if server.answers == "noop":
        return noop_expected(expected, BATCH.rows)
    return expected if server.answers == "model" else None


def git_state() -> dict[str, str]:
    """Which refit was measured: the commit, and how many files differ from it (read-only)."""
    from harness.envs import REPO

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(REPO), *args], capture_output=True, text=True, check=False
        )
        return done.stdout.strip()

    changed = [
        line
        for line in git("status", "--porcelain").splitlines()
        if not line[3:].startswith("bench/")
    ]
    return {"commit": git("rev-parse", "--short", "HEAD"), "changed_files": str(len(changed))}


def machine() -> dict[str, str]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 2**20:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return {
        "cpus": str(os.cpu_count()),
        "cpu": model,
        "memory": mem,
        "kernel": platform.release(),
        "os": platform.platform(),
        "load_average_at_start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str]) -> int:
    args = options(argv)
    started = datetime.now(UTC)
    out: Path = args.out or BENCH / "results" / started.strftime("%Y%m%dT%H%M%SZ")
    work, logs = out / "work", out / "logs"
    for folder in (work, logs):
        folder.mkdir(parents=True, exist_ok=True)
    say(f"run folder: {out}")
    source = git_state()  # before the servers import refit: what they run

    # SIGTERM ends the run like Ctrl-C does: through the `finally` that stops the servers.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)

    try:
        wrk = ensure_wrk(say)
        env_names = (
            ["refit"] if args.profile else sorted({ENV_OF[s] for s in args.servers} | {"refit"})
        )
        envs = ensure_envs(env_names, logs, say)
        info, expected, records = prepare_model(envs, work, logs)
    except SetupError as exc:
        say(f"setup failed: {exc}")
        return 2
    if args.profile:
        shown = profile(envs, work, out)
        if shown is None:
            return 1
        with contextlib.suppress(OSError):
            print(shown, end="", flush=True)
        say(f"done; the profile is in {out / 'profile.md'}")
        return 0

    servers = make_servers(envs, args.servers)
    bodies: dict[str, dict[str, bytes]] = {}
    body_files: dict[str, dict[str, Path]] = {}
    (work / "bodies").mkdir(exist_ok=True)
    for server in servers:
        bodies[server.name], body_files[server.name] = {}, {}
        for shape in (SINGLE, BATCH):
            body = server.body(records[: shape.rows], shape)
            path = work / "bodies" / f"{server.name}-{shape.name}.json"
            path.write_bytes(body)
            bodies[server.name][shape.name], body_files[server.name][shape.name] = body, path

    measures: list[Measure] = []
    failures: list[str] = []
    try:
        say(f"starting {', '.join(s.name for s in servers)} with {args.workers} workers each")
        for server in servers:
            server.start(work, logs, args.workers)
        deadline = time.monotonic() + 300
        for server in servers:
            took = wait_ready(server, bodies[server.name]["single"], deadline)
            want = expected_of(server, expected)
            verify(server, bodies[server.name], want)
            what = "answers right" if want else "answers 2xx (a constant, not checked)"
            say(
                f"{server.name} ready on port {server.port} and {what} "
                f"(one record and {BATCH.rows}; waited {took:.1f} s)"
            )

        total = args.rounds * sum(
            1 for cell in args.cells for s in servers if s.batches or cell.shape != "batch"
        )
        say(
            f"measuring {total} runs of {args.warmup} + {args.duration} s "
            f"(about {total * (args.warmup + args.duration + 0.5) / 60:.1f} min)"
        )
        quiet_budget = QUIET_BUDGET
        for round_ in range(args.rounds):
            turn = round_ % len(servers)
            order = servers[turn:] + servers[:turn]
            for cell in args.cells:
                shape = SHAPES[cell.shape]
                for server in order:
                    if shape.batch and not server.batches:
                        continue
                    if args.quiet_wait and quiet_budget > 0:
                        waited = time.monotonic()
                        wait_quiet(servers, QUIET_LIMIT, min(args.quiet_wait, quiet_budget))
                        quiet_budget -= time.monotonic() - waited
                    m = measure(
                        wrk,
                        server,
                        cell.name,
                        shape,
                        cell.connections,
                        body_files[server.name][shape.name],
                        args.duration,
                        args.warmup,
                        round_ + 1,
                        logs / "wrk.log",
                    )
                    measures.append(m)
                    errors = f", {m.errors} errors {m.error_kinds}" if m.errors else ""
                    say(
                        f"round {round_ + 1} {cell.name:14} {server.name:18} "
                        f"{m.rps:8,.0f} req/s  p50 {m.p50_ms:7.2f} ms  p99 {m.p99_ms:7.2f} ms  "
                        f"RSS {m.peak_rss_mb:5,.0f} MB  CPU {m.server_cpu:.2f} "
                        f"(others {m.other_cpu:.2f}){errors}"
                    )
                    if m.good == 0:
                        failures.append(f"{server.name} gave no good answer in {cell.name}")
                    if not server.process.running():
                        raise ServerFailure(
                            f"{server.name} died during {cell.name}:\n{server.process.log_tail()}"
                        )
                # Every server still answers right after the load.
                for server in servers:
                    verify(server, bodies[server.name], expected_of(server, expected))
    except ServerFailure as exc:
        failures.append(str(exc))
    except KeyboardInterrupt:
        failures.append("interrupted")
    finally:
        for server in servers:
            if server.process is not None:
                server.process.stop()
        say("stopped the servers")
    profiled = None
    if not args.quick and not failures:  # on the machine the servers left quiet
        profiled = profile(envs, work, out)
        if profiled is None:
            failures.append("bench/profile.py failed (logs/profile.log)")

    versions = {name: env.versions() for name, env in envs.items()}
    versions["wrk"] = {"wrk": wrk_version(wrk)}
    report = {
        "date": started.isoformat(timespec="seconds"),
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "settings": {
            "quick": args.quick,
            "rounds": args.rounds,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "workers": args.workers,
            "servers": args.servers,
            "answers_checked_against": {s.name: s.answers for s in servers},
            "quiet_wait_s": args.quiet_wait,
            "quiet_limit_cores": QUIET_LIMIT,
            "threads": {
                "OMP_NUM_THREADS": "1",
                "OPENBLAS_NUM_THREADS": "1",
                "MKL_NUM_THREADS": "1",
            },
            "load": "wrk -t1 -cC --timeout 5s, keep-alive, same body every request",
        },
        "model": info,
        "refit_source": source,
        "versions": versions,
        "measures": [m.to_dict() for m in measures],
        "failures": failures,
    }
    summaries = summarise(measures, args.cells, args.servers)
    report["summary"] = [s.__dict__ for s in summaries]
    (out / "results.json").write_text(json.dumps(report, indent=2))
    if summaries:
        text = render(report, summaries, args.cells)
        if profiled is not None:
            text += f"\nWhere one request's time goes (bench/profile.py):\n\n{profiled}"
        (out / "results.md").write_text(text)
        with contextlib.suppress(OSError):
            print(text, flush=True)
    latest = BENCH / "results" / "latest"
    if out.parent == BENCH / "results":
        if latest.is_symlink() or latest.exists():
            latest.unlink()
        latest.symlink_to(out.name)
    if failures:
        for failure in failures:
            say(f"FAILED: {failure}")
        return 1
    say(f"done; files in {out}")
    return 0


def profile(envs: dict, work: Path, out: Path) -> str | None:
    """Run bench/profile.py in refit's environment on the model just trained: its Markdown
    (also in `profile.md`), or None when it failed."""
    say("profiling one request through refit's app and the fastapi-onnx app, in process")
    done = subprocess.run(
        [str(envs["refit"].python), str(BENCH / "profile.py"), str(work)],
        env=base_environment(),
        capture_output=True,
        text=True,
        check=False,
    )
    (out / "logs" / "profile.log").write_text(done.stderr)
    if done.returncode != 0:
        say(f"the profile failed:\n{done.stderr[-3000:]}")
        return None
    (out / "profile.md").write_text(done.stdout)
    return done.stdout


def render(report: dict, summaries: list, cells: list[Cell]) -> str:
    m, s = report["machine"], report["settings"]
    versions = report["versions"]
    lines = [
        f"Run of {report['date']} ({'quick' if s['quick'] else 'full'}): {s['rounds']} "
        f"round(s), {s['warmup_s']} s warm-up + {s['duration_s']} s per cell, "
        f"{s['workers']} workers per server, OMP_NUM_THREADS=1; medians over rounds.",
        f"Machine: {m['cpus']} CPUs ({m['cpu']}), {m['memory']}, Linux {m['kernel']}; "
        f"load average at start {m['load_average_at_start']}.",
        f"refit: commit {report['refit_source']['commit']} with "
        f"{report['refit_source']['changed_files']} changed file(s) in the working tree.",
        "Versions: "
        + "; ".join(
            f"{name}: " + ", ".join(f"{k} {v}" for k, v in vs.items())
            for name, vs in versions.items()
        )
        + ".",
    ]
    tables = [
        ("Every server", results_table(summaries)),
        (
            "refit against the best peer that runs the scikit-learn pipeline",
            ratio_table(summaries, cells),
        ),
        (
            "refit against the hand-written FastAPI + ONNX Runtime server (same ONNX graph; "
            "throughput ratios above 1 and latency ratios below 1 favour refit), and against "
            "the floor of Python HTTP (a bare ASGI app under the same uvicorn; its constant "
            "answers are not checked against the model)",
            hand_written_table(summaries, cells),
        ),
        (
            "What prediction logging costs: refit as it runs by default (every request logged) "
            "against refit with `monitor.log: false`",
            logging_table(summaries, cells),
        ),
        ("The same app under granian and under uvicorn", granian_table(summaries, cells)),
    ]
    for title, table in tables:
        if table:
            lines += ["", f"{title}:", "", table]
    return "\n".join([*lines, ""])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
