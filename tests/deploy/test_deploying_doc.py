"""docs/deploying.md: linked from the README, and naming what the stack and the command have."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
import yaml

from refit.cli import app

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "deploying.md").read_text(encoding="utf-8")
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_the_readme_links_the_deploying_page() -> None:
    assert "](docs/deploying.md)" in README
    for level in ("`refit up`", "Compose", "Kubernetes and Helm"):
        assert level in DOC.split("\n\n", 3)[2], f"the side-by-side table names {level}"


def test_the_page_names_every_service_of_the_bundled_stack_and_every_option() -> None:
    stack = yaml.safe_load((ROOT / "deploy" / "compose" / "compose.yaml").read_text())
    for service in stack["services"]:
        assert f"`{service}`" in DOC, service
    # typer's own copy of click's classes: looked up by attribute, not by isinstance
    command: Any = typer.main.get_command(app)
    options = [
        opt
        for param in command.commands["deploy"].commands["compose"].params
        for opt in param.opts
        if opt.startswith("--") and opt != "--project"
    ]
    assert options
    for option in options:
        assert f"`{option}" in DOC, option
        assert option in README, option


def test_the_page_says_where_prometheus_finds_the_registrys_figures_on_kubernetes() -> None:
    [row] = [line for line in DOC.splitlines() if line.startswith("| **Prometheus** |")]
    kubernetes = row.split(" | ")[-1]
    assert "`refit metrics --host 0.0.0.0 --port 9464`" in kubernetes
    assert "`NAME-metrics`" in kubernetes and "`metrics.enabled`" in kubernetes
    assert "nowhere" not in row
    for objects in ("Deployment and Service `NAME-metrics`", "`metrics.enabled`"):
        assert objects in DOC.split("\n## Helm\n", 1)[1], objects
