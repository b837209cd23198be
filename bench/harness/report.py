"""From measures to tables: the median over rounds of each server in each cell; refit's ratio
to the best scikit-learn peer, to the hand-written FastAPI + ONNX Runtime peer and to the floor
of Python HTTP; and each app under granian against the same app under uvicorn."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from harness.load import Measure
from harness.peers import COUNTERPARTS, FLOOR, HAND_WRITTEN, NO_LOG, PEER_NAMES


@dataclass(frozen=True)
class Cell:
    name: str
    shape: str
    connections: int


@dataclass(frozen=True)
class Summary:
    """A server in a cell, over its rounds: medians, errors added up, the highest RSS."""

    server: str
    cell: str
    rounds: int
    rps: float
    rows_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int
    peak_rss_mb: float
    server_cpu: float
    other_cpu: float


def summarise(measures: list[Measure], cells: list[Cell], servers: list[str]) -> list[Summary]:
    out = []
    for cell in cells:
        for server in servers:
            mine = [m for m in measures if m.cell == cell.name and m.server == server]
            if not mine:
                continue
            out.append(
                Summary(
                    server=server,
                    cell=cell.name,
                    rounds=len(mine),
                    rps=statistics.median(m.rps for m in mine),
                    rows_per_s=statistics.median(m.rows_per_s for m in mine),
                    p50_ms=statistics.median(m.p50_ms for m in mine),
                    p99_ms=statistics.median(m.p99_ms for m in mine),
                    errors=sum(m.errors for m in mine),
                    requests=sum(m.requests for m in mine),
                    peak_rss_mb=max(m.peak_rss_mb for m in mine),
                    server_cpu=statistics.median(m.server_cpu for m in mine),
                    other_cpu=statistics.median(m.other_cpu for m in mine),
                )
            )
    return out


def _num(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def results_table(summaries: list[Summary]) -> str:
    lines = [
        "| cell | server | req/s | rows/s | p50 ms | p99 ms | errors | peak RSS MB "
        "| server CPU | other CPU |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for s in summaries:
        errors = f"{s.errors}/{s.requests}" if s.errors else "0"
        lines.append(
            f"| {s.cell} | {s.server} | {_num(s.rps)} | {_num(s.rows_per_s)} | "
            f"{_num(s.p50_ms)} | {_num(s.p99_ms)} | {errors} | {s.peak_rss_mb:,.0f} | "
            f"{s.server_cpu:.2f} | {s.other_cpu:.2f} |"
        )
    return "\n".join(lines)


def ratio_table(summaries: list[Summary], cells: list[Cell]) -> str:
    """refit against the best peer of each cell, by throughput, and its no-op floor."""
    lines = [
        "| cell | refit req/s | best peer | its req/s | refit ÷ best | refit p99 ÷ its p99 "
        "| refit-noop req/s | refit ÷ refit-noop |",
        "|---|--:|---|--:|--:|--:|--:|--:|",
    ]
    rows = 0
    for cell in cells:
        here = {s.server: s for s in summaries if s.cell == cell.name}
        refit = here.get("refit")
        peers = [here[name] for name in PEER_NAMES if name in here]
        if refit is None or not peers:
            continue
        best = max(peers, key=lambda s: s.rps)
        noop = here.get("refit-noop")
        p99 = refit.p99_ms / best.p99_ms if best.p99_ms else float("nan")
        rows += 1
        lines.append(
            f"| {cell.name} | {_num(refit.rps)} | {best.server} | {_num(best.rps)} | "
            f"{refit.rps / best.rps:.2f}x | {p99:.2f}x | "
            f"{_num(noop.rps) if noop else '-'} | "
            f"{f'{refit.rps / noop.rps:.0%}' if noop and noop.rps else '-'} |"
        )
    return "\n".join(lines) if rows else ""


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "-"


def hand_written_table(summaries: list[Summary], cells: list[Cell]) -> str:
    """refit against the FastAPI + ONNX Runtime peer (throughput: above 1 is better for refit;
    latency: below 1 is), and refit's and refit-noop's requests/s as a share of the floor's."""
    lines = [
        f"| cell | refit req/s | refit rows/s | {HAND_WRITTEN} req/s | its rows/s "
        f"| refit ÷ {HAND_WRITTEN} (req/s, rows/s) | p50 ÷ its p50 | p99 ÷ its p99 "
        f"| {FLOOR} req/s | refit ÷ {FLOOR} | refit-noop ÷ {FLOOR} |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    rows = 0
    for cell in cells:
        here = {s.server: s for s in summaries if s.cell == cell.name}
        refit, peer, floor = here.get("refit"), here.get(HAND_WRITTEN), here.get(FLOOR)
        noop = here.get("refit-noop")
        if refit is None or (peer is None and floor is None):
            continue
        rows += 1
        lines.append(
            f"| {cell.name} | {_num(refit.rps)} | {_num(refit.rows_per_s)} | "
            + (
                f"{_num(peer.rps)} | {_num(peer.rows_per_s)} | {_ratio(refit.rps, peer.rps)} | "
                f"{_ratio(refit.p50_ms, peer.p50_ms)} | {_ratio(refit.p99_ms, peer.p99_ms)} | "
                if peer
                else "- | - | - | - | - | "
            )
            + (
                f"{_num(floor.rps)} | {refit.rps / floor.rps:.0%} | "
                f"{f'{noop.rps / floor.rps:.0%}' if noop else '-'} |"
                if floor and floor.rps
                else "- | - | - |"
            )
        )
    return "\n".join(lines) if rows else ""


def granian_table(summaries: list[Summary], cells: list[Cell]) -> str:
    """Each app served by granian against the same app served by uvicorn."""
    lines = [
        "| cell | app | uvicorn req/s | p50 ms | p99 ms | granian req/s | p50 ms | p99 ms "
        "| granian ÷ uvicorn |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    rows = 0
    for cell in cells:
        here = {s.server: s for s in summaries if s.cell == cell.name}
        for granian, uvicorn in COUNTERPARTS.items():
            g, u = here.get(granian), here.get(uvicorn)
            if g is None or u is None:
                continue
            rows += 1
            lines.append(
                f"| {cell.name} | {uvicorn} | {_num(u.rps)} | {_num(u.p50_ms)} | "
                f"{_num(u.p99_ms)} | {_num(g.rps)} | {_num(g.p50_ms)} | {_num(g.p99_ms)} | "
                f"{_ratio(g.rps, u.rps)} |"
            )
    return "\n".join(lines) if rows else ""


def logging_table(summaries: list[Summary], cells: list[Cell]) -> str:
    """refit as it runs by default (every request logged) against refit with prediction
    logging off: what logging costs in throughput (a ratio below 1) and in latency."""
    lines = [
        f"| cell | refit req/s | p50 ms | p99 ms | {NO_LOG} req/s | p50 ms | p99 ms "
        f"| logging on ÷ off (req/s) | p99 on ÷ off |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    rows = 0
    for cell in cells:
        here = {s.server: s for s in summaries if s.cell == cell.name}
        on, off = here.get("refit"), here.get(NO_LOG)
        if on is None or off is None:
            continue
        rows += 1
        lines.append(
            f"| {cell.name} | {_num(on.rps)} | {_num(on.p50_ms)} | {_num(on.p99_ms)} | "
            f"{_num(off.rps)} | {_num(off.p50_ms)} | {_num(off.p99_ms)} | "
            f"{_ratio(on.rps, off.rps)} | {_ratio(on.p99_ms, off.p99_ms)} |"
        )
    return "\n".join(lines) if rows else ""
