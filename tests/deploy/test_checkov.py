"""checkov on refit's image, deployment files and workflows, with the reviewed skips of one file.

checkov pins old versions of boto3 and packaging that refit's own dependencies outgrew, so it
cannot share the project's virtualenv: it is installed once per machine into a virtualenv of
its own under the tests' cache folder (from the package index, as the dev dependencies are),
and run offline (`--skip-download`: no policies or guidelines fetched, no platform).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import pytest
import yaml

# The binaries and the chart's variations as the chart's and the manifests' own tests have
# them (fixtures `helm` and `kubectl`).
from test_helm import BUNDLED as CHART
from test_helm import VARIATIONS as CHART_VARIATIONS
from test_helm import helm  # noqa: F401
from test_kubernetes import BUNDLED as KUSTOMIZE
from test_kubernetes import kubectl  # noqa: F401

from containers import cache_dir
from refit.cli import app
from refit.cli._output import run_app
from refit.deploy.compose import render_compose
from refit.project import load_project
from stack import create_stack_project

ROOT = Path(__file__).resolve().parents[2]
SKIPS_FILE = ROOT / "deploy" / "checkov-skips.yaml"
CHECKOV_VERSION = "3.3.30"

# How a target is made, in a scratch folder: checkov's framework and the file or folder to scan.
Target = Callable[[Path, pytest.FixtureRequest], tuple[str, Path]]


def _missing(what: str) -> NoReturn:
    if os.environ.get("CI"):
        pytest.fail(f"{what}; CI must scan it with checkov, not skip it")
    pytest.skip(what)


def checkov_binary() -> Path:
    """checkov, in its own virtualenv under the tests' cache folder (made on first use)."""
    home = cache_dir() / f"checkov-{CHECKOV_VERSION}"
    binary = home / "bin" / "checkov"
    installed = home / ".installed"  # written last: a half-made virtualenv is made again
    if installed.exists():
        return binary
    shutil.rmtree(home, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(home)], check=True, timeout=120)
    result = subprocess.run(
        [
            str(home / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            f"checkov=={CHECKOV_VERSION}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, f"pip install checkov failed:\n{result.stderr[-4000:]}"
    installed.touch()
    return binary


def _dockerfile(tmp: Path, request: pytest.FixtureRequest) -> tuple[str, Path]:
    return "dockerfile", ROOT / "Dockerfile"


def _project_dockerfile(tmp: Path, request: pytest.FixtureRequest) -> tuple[str, Path]:
    project = load_project(create_stack_project(tmp / "project"))
    files = render_compose(project, tmp / "stack")
    path = tmp / "stack" / "Dockerfile"
    path.parent.mkdir(parents=True)
    path.write_text(files["Dockerfile"])
    return "dockerfile", path


def _compose(tmp: Path, request: pytest.FixtureRequest) -> tuple[str, Path]:
    return "secrets", ROOT / "deploy" / "compose"


def _workflows(tmp: Path, request: pytest.FixtureRequest) -> tuple[str, Path]:
    return "github_actions", ROOT / ".github"


def _project_workflow(tmp: Path, request: pytest.FixtureRequest) -> tuple[str, Path]:
    root = tmp / "project"
    assert run_app(app, ["init", str(root), "--example", "breast-cancer"]) == 0
    return "github_actions", root / ".github"


def _overlay(name: str) -> Target:
    def render(tmp: Path, request: pytest.FixtureRequest) -> tuple[str, Path]:
        overlay = KUSTOMIZE / "overlays" / name
        if not overlay.is_dir():
            _missing(f"{overlay.relative_to(ROOT)} is missing")
        binary = request.getfixturevalue("kubectl")
        return "kubernetes", _output(tmp, [str(binary), "kustomize", str(overlay)])

    return render


def _chart(variation: str) -> Target:
    def render(tmp: Path, request: pytest.FixtureRequest) -> tuple[str, Path]:
        if not CHART.is_dir():
            _missing(f"{CHART.relative_to(ROOT)} is missing")
        binary = request.getfixturevalue("helm")
        values = CHART_VARIATIONS[variation]
        return "kubernetes", _output(tmp, [str(binary), "template", "refit", str(CHART), *values])

    return render


TARGETS: dict[str, Target] = {
    "dockerfile": _dockerfile,
    "project-dockerfile": _project_dockerfile,
    "compose": _compose,
    "workflows": _workflows,
    "project-workflow": _project_workflow,
    "kubernetes-dev": _overlay("dev"),
    "kubernetes-prod": _overlay("prod"),
    **{f"helm: {variation}": _chart(variation) for variation in CHART_VARIATIONS},
}


def _output(tmp: Path, command: list[str]) -> Path:
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, f"{' '.join(command)}:\n{result.stderr}"
    path = tmp / "rendered" / "manifests.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(result.stdout)
    return path


def reviewed_skips(target: str) -> dict[str, str]:
    """{check id: reason} of the skip file for `target` (`helm` stands for every variation
    of the chart, `helm: VARIATION` for one)."""
    entries: list[dict[str, Any]] = yaml.safe_load(SKIPS_FILE.read_text())["skips"]
    names = {target, target.split(":", 1)[0]}
    return {entry["check"]: entry["reason"] for entry in entries if names & set(entry["targets"])}


def failed_checks(framework: str, path: Path) -> dict[str, str]:
    """checkov's failed checks on `path` (a file or a folder): id -> what failed, where."""
    result = subprocess.run(
        [
            str(checkov_binary()),
            "--skip-download",
            "--framework",
            framework,
            "--directory" if path.is_dir() else "--file",
            str(path),
            "--output",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode in (0, 1), f"checkov failed to run:\n{result.stderr[-4000:]}"
    report = json.loads(result.stdout)
    for one in report if isinstance(report, list) else [report]:
        assert one.get("summary", one).get("parsing_errors", 0) == 0, result.stdout[-4000:]
    failed: dict[str, str] = {}
    for one in report if isinstance(report, list) else [report]:
        for check in one.get("results", {}).get("failed_checks", []):
            failed.setdefault(
                check["check_id"],
                f"{check['check_name']} ({check['file_path']}: {check['resource']})",
            )
    return failed


def test_every_skip_names_a_check_a_target_and_its_reason() -> None:
    entries = yaml.safe_load(SKIPS_FILE.read_text())["skips"]
    for entry in entries:
        assert set(entry) == {"check", "targets", "reason"}, entry
        assert re.fullmatch(r"CKV2?_[A-Z0-9]+_\d+", entry["check"]), entry["check"]
        assert entry["targets"] and set(entry["targets"]) <= {*TARGETS, "helm"}, entry
        assert len(entry["reason"].split()) >= 8, f"{entry['check']}: say why it is accepted"
    checks = [(entry["check"], target) for entry in entries for target in entry["targets"]]
    assert len(checks) == len(set(checks)), "one entry per check and target"


@pytest.mark.parametrize("target", list(TARGETS))
def test_checkov_passes_with_the_reviewed_skips_alone(
    target: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    framework, path = TARGETS[target](tmp_path, request)
    failed = failed_checks(framework, path)
    skips = reviewed_skips(target)
    unreviewed = {check: why for check, why in failed.items() if check not in skips}
    assert not unreviewed, (
        f"checkov fails {target} on checks that {SKIPS_FILE.relative_to(ROOT)} does not "
        f"skip: fix them, or add each with its reason: {json.dumps(unreviewed, indent=2)}"
    )
    stale = sorted(set(skips) - set(failed))
    assert not stale, f"{target} passes {stale} now: remove them from the skip file"
