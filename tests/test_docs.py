"""What the README and the repository promise: the gate's sample verdicts, the license."""

from __future__ import annotations

import math
import re
import tomllib
from pathlib import Path

import yaml

from refit.examples import EXAMPLES, create_project
from refit.run.demo import create_demo_project
from refit.spec import SPEC_FILE

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


def test_no_example_or_sketch_shows_a_monitor_schedule_that_nothing_runs(
    tmp_path: Path,
) -> None:
    sketch = README.split("## The spec (`refit.yaml`)", 1)[1].split("```", 2)[1]
    assert "monitor: 5m" not in sketch and "coming with drift detection" in sketch
    roots = [create_project(tmp_path / name, name) for name in EXAMPLES]
    for root in [*roots, create_demo_project(tmp_path / "demo")]:
        spec = yaml.safe_load((root / SPEC_FILE).read_text(encoding="utf-8"))
        assert "monitor" not in spec["schedule"], root.name


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
