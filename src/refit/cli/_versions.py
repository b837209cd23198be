"""How the commands name who acts and show a version (`refit train`, `refit models`)."""

from __future__ import annotations

import getpass
import socket
from typing import Any

from refit.flavors import get_flavor
from refit.registry import ModelVersionRow
from refit.registry.signing import signature_state
from refit.spec import METRICS


def actor() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def native_reason(row: ModelVersionRow) -> str | None:
    """Why a server runs this version natively rather than by ONNX Runtime (None: it does
    not): its conversion failed or disagreed, and the status says how."""
    return get_flavor(row.flavor).native_reason(row)


def version_dict(
    row: ModelVersionRow, aliases: dict[str, int], key: bytes | None = None
) -> dict[str, Any]:
    data = row.to_dict()
    data["aliases"] = sorted(a for a, v in aliases.items() if v == row.version)
    data["signed"] = signature_state(row, key)
    return data


SHOWN_TRIALS = 10
"""The trials `refit models show` lists (`--json` gives them all)."""


def tuning_lines(tuning: dict[str, Any] | None) -> list[str]:
    """The tuning step of a version, for `refit models show`: a summary, then the trials best
    first (the best marked with *), at most `SHOWN_TRIALS` of them; no lines without tuning."""
    if not tuning or not tuning.get("trials"):
        return []
    trials: list[dict[str, Any]] = tuning["trials"]
    metric, best = tuning["metric"], tuning["best"]
    folds = tuning.get("folds")
    scored_on = f"{folds} folds" if folds else "a validation part"
    warm = "warm start from production" if tuning.get("warm_start") else "no warm start"
    note = tuning.get("warm_start_note")
    failed = sum(1 for t in trials if t["state"] != "complete")
    lines = [
        f"tuning    {tuning['sampler']}, {len(trials)} trials ({failed} failed) on {scored_on} "
        f"by {metric}; {warm}"
        + (f" ({note})" if note and tuning.get("warm_start") is False else "")
    ]
    sign = -1.0 if METRICS[metric][1] else 1.0

    def rank(i: int) -> tuple[bool, float, int]:
        value = trials[i]["score"]
        return (value is None, 0.0 if value is None else sign * value, i)

    order = sorted(range(len(trials)), key=rank)
    for i in order[:SHOWN_TRIALS]:
        trial = trials[i]
        mark = "*" if i == best else " "
        params = " ".join(f"{k}={v}" for k, v in trial["params"].items())
        result = f"{metric} {trial['score']:.4f}" if trial["score"] is not None else trial["state"]
        lines.append(
            f"  {mark} #{trial['number']:<3} {params}  {result}  ({trial['duration_s']:.2f} s)"
        )
    if len(trials) > SHOWN_TRIALS:
        lines.append(f"    ... {len(trials) - SHOWN_TRIALS} more (--json lists every trial)")
    return lines
