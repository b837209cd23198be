"""The gate's intervals as people read them: `refit models decisions`, `refit status` and the
JSON of both carry each decision's difference and interval."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from refit.cli import app
from refit.cli._output import out, run_app
from refit.data.ingest import run_ingest
from refit.examples import create_project, drop_batch
from refit.intervals import difference_text
from refit.project import load_project
from refit.services import open_services
from refit.train.run import run_training

NAME = "breast-cancer"
INTERVAL = r"[+-]\d+\.\d+ \[-?\d+\.\d+, -?\d+\.\d+\]"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """Two versions: the first, then a challenger compared with it on the same rows."""
    root = create_project(tmp_path / "p", NAME)
    for batch in (None, 2):
        if batch is not None:
            drop_batch(root, NAME, batch, 2)
        with open_services(load_project(root)) as services:
            run_ingest(services.project, services.registry, services.store)
            run_training(services)
    return root


def test_decisions_show_the_difference_and_its_interval(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_app(app, ["models", "decisions", "-p", str(root)]) == 0
    text = " ".join(capsys.readouterr().out.split())  # the table wraps at the terminal's width
    assert run_app(app, ["models", "decisions", "-p", str(root), "--json"]) == 0
    second, first = json.loads(capsys.readouterr().out)
    assert "difference" in text and difference_text(second["evidence"]) in text.replace(
        ", ", ","
    ).replace(",", ", ")
    assert first["evidence"] is None  # the first version: the floor alone
    evidence = second["evidence"]
    assert evidence["test"] == "delong" and evidence["confidence"] == 0.95
    assert evidence["low"] <= evidence["difference"] <= evidence["high"]
    assert evidence["rows"] > 0 and "needed_rows" in evidence["detectable"]


def test_status_says_what_the_last_gate_found(
    root: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(out, "width", 300)
    assert run_app(app, ["status", "-p", str(root)]) == 0
    text = capsys.readouterr().out
    line = next(line for line in text.splitlines() if line.startswith("last gate: "))
    promoted = rf"last gate: v2 is better by {INTERVAL}, promoted"
    kept = rf"last gate: v2: {INTERVAL}, not clearly better, kept v1"
    assert re.fullmatch(promoted, line) or re.fullmatch(kept, line), line
