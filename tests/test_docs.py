"""What the README and the repository promise: the gate's sample verdicts, the license."""

from __future__ import annotations

import math
import re
import tomllib
from pathlib import Path

from refit.spec import MonitorSpec

ROOT = Path(__file__).parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
NUMBER = r"(-?\d+(?:\.\d+)?)"


def test_every_gate_verdict_in_the_readme_agrees_with_its_numbers() -> None:
    below = re.findall(rf"{NUMBER} is below the floor {NUMBER}", README)
    reaches = re.findall(rf"{NUMBER} reaches the floor {NUMBER}", README)
    beats = re.findall(rf"{NUMBER} beats production v\d+ \({NUMBER}\) by {NUMBER}", README)
    not_better = re.findall(
        rf"{NUMBER} is not better than production v\d+ \({NUMBER}\) by at least {NUMBER}", README
    )
    for value, floor in below:
        assert float(value) < float(floor), f"{value} is below the floor {floor}"
    for value, floor in reaches:
        assert float(value) >= float(floor), f"{value} reaches the floor {floor}"
    for value, champion, margin in beats:
        assert math.isclose(float(value) - float(champion), float(margin), rel_tol=1e-3)
    for value, champion, margin in not_better:
        assert float(value) - float(champion) < float(margin)
    assert reaches and beats and not_better, "the sample output shows each kind of verdict"


def test_the_readme_documents_the_monitor_schedule_and_every_monitor_setting() -> None:
    sketch = README.split("## The spec (`refit.yaml`)", 1)[1].split("```", 2)[1]
    assert "monitor: 5m" in sketch and "\nmonitor:" in sketch
    monitoring = README.split("\n## Monitoring\n", 1)[1].split("\n## ", 1)[0]
    assert "`schedule.monitor`" in monitoring
    documented = set(re.findall(r"^\| `(\w+)` \|", monitoring, flags=re.MULTILINE))
    mentioned = set(re.findall(r"`(\w+)`", monitoring))
    for field in MonitorSpec.model_fields:
        assert field in documented or field in mentioned, f"monitor.{field} is not documented"
    judging = set(MonitorSpec.model_fields) - {
        "log",
        "sample",
        "buffer_rows",
        "flush_rows",
        "flush_seconds",
    }
    assert judging <= documented, sorted(judging - documented)
    for name, field in MonitorSpec.model_fields.items():
        if name in judging:
            row = re.search(rf"^\| `{name}` \| ([^|]+) \|", monitoring, flags=re.MULTILINE)
            assert row is not None
            shown = row[1].strip().strip("`")
            default = field.default
            expected = "none" if default is None else str(default).lower()
            assert shown == expected, f"monitor.{name}: README says {shown}, the spec {default}"


def test_the_license_is_the_apache_license_pyproject_declares() -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert declared["project"]["license"] == "Apache-2.0"
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License\n                           Version 2.0, January 2004" in text
    # The full text: all nine sections of the terms, and the appendix on how to apply it.
    for section in range(1, 10):
        assert re.search(rf"^\s+{section}\. \w", text, flags=re.MULTILINE), section
    assert "END OF TERMS AND CONDITIONS" in text
    assert "APPENDIX: How to apply the Apache License to your work." in text
