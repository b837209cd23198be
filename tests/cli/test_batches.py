"""`refit batches`: the ingest batches, and the rejected rows of one with file, line and reason."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from refit.cli import app
from refit.cli._output import run_app
from refit.examples import example_rows


def refit(capsys: pytest.CaptureFixture[str], *args: str, code: int = 0) -> tuple[str, str]:
    """Run `refit ARGS` in process; return its stdout and stderr, checking the exit code."""
    capsys.readouterr()
    got = run_app(app, list(args))
    captured = capsys.readouterr()
    assert got == code, f"refit {' '.join(args)} exited {got}: {captured.err}"
    return captured.out, captured.err


def refit_json(capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    return json.loads(refit(capsys, *args, "--json")[0])


@pytest.fixture
def project(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> Path:
    """The breast-cancer example, with its first file ingested."""
    root = tmp_path / "demo"
    refit(capsys, "init", str(root), "--example", "breast-cancer")
    assert refit_json(capsys, "ingest", "-p", str(root))["status"] == "accepted"
    return root


def write_batch(project: Path, name: str) -> None:
    """Twenty rows of the example: the third with a word for a number, the sixth cut short."""
    rows = example_rows("breast-cancer").iloc[400:420].to_csv(index=False).splitlines()
    header = rows[0].split(",")
    third = rows[3].split(",")
    third[header.index("mean_radius")] = "big"
    rows[3] = ",".join(third)
    rows[6] = ",".join(rows[6].split(",")[:5])
    (project / "data" / "incoming" / name).write_text("\n".join(rows) + "\n", encoding="utf-8")


def test_rejected_rows_are_listed_with_file_line_and_reason(
    capsys: pytest.CaptureFixture[str], project: Path
) -> None:
    p = str(project)
    write_batch(project, "batch-0002.csv")
    ingested = refit_json(capsys, "ingest", "-p", p)
    assert ingested["status"] == "accepted", ingested["message"]
    batch = ingested["batch"]
    assert (batch["rows_read"], batch["rows_valid"], batch["rows_rejected"]) == (20, 18, 2)

    listed = refit_json(capsys, "batches", "list", "-p", p)
    assert [b["id"] for b in listed] == [batch["id"], batch["id"] - 1]
    table, _ = refit(capsys, "batches", "list", "-p", p)
    newest = table.splitlines()[1].split()
    assert newest[0] == str(batch["id"]) and "accepted" in newest

    rejects = refit_json(capsys, "batches", "rejects", str(batch["id"]), "-p", p)
    assert [(r["_file"], r["_line"]) for r in rejects] == [
        ("data/incoming/batch-0002.csv", 4),
        ("data/incoming/batch-0002.csv", 7),
    ]
    assert rejects[0]["_reason"] == "mean_radius: 'big' is not a number"
    assert rejects[0]["mean_radius"] == "big"
    assert rejects[1]["_reason"] == "5 fields where the header has 31"
    text, _ = refit(capsys, "batches", "rejects", str(batch["id"]), "-p", p)
    assert text.startswith(f"batch {batch['id']} (accepted): 2 rejected of 20")
    assert "'big'" in text

    _, said = refit(capsys, "batches", "rejects", str(batch["id"] - 1), "-p", p)
    assert "has no rejected rows" in said
    _, said = refit(capsys, "batches", "rejects", "999", "-p", p, code=3)
    assert "no ingest batch 999" in said


def test_duplicates_are_counted_and_dropped_when_the_spec_says_so(
    capsys: pytest.CaptureFixture[str], project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = str(project)
    incoming = project / "data" / "incoming"
    first = sorted(incoming.glob("*.csv"))[0]
    rows = first.read_text(encoding="utf-8").splitlines()
    again = [
        rows[0],
        *rows[1:4],
        rows[1],
        *example_rows("breast-cancer").iloc[500:502].to_csv(index=False).splitlines()[1:],
    ]
    (incoming / "again.csv").write_text("\n".join(again) + "\n", encoding="utf-8")
    kept = refit_json(capsys, "ingest", "-p", p)
    assert kept["duplicates"] == 4, kept["message"]
    assert "4 duplicates kept (data.drop_duplicates: true drops them)" in kept["message"]

    monkeypatch.setenv("REFIT_DATA__DROP_DUPLICATES", "true")
    (incoming / "more.csv").write_text("\n".join(again) + "\n", encoding="utf-8")
    before = kept["snapshot"]["row_count"]
    dropped = refit_json(capsys, "ingest", "-p", p)
    assert dropped["duplicates"] == 6, dropped["message"]
    assert "6 duplicates dropped" in dropped["message"]
    assert dropped["status"] == "unchanged" and dropped["snapshot"]["row_count"] == before
