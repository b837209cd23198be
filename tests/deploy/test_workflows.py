"""The GitHub Actions workflows: refit's own, and the one `refit init` writes into a project.

Neither can run here (no GitHub runner), so they are checked by actionlint (with shellcheck
on every `run:` script), their commands are the ones CI runs here, and the project
workflow's test job is run as its steps say, on a project `refit init` made.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import SecretStr

from refit.cli import app
from refit.cli._output import run_app
from refit.deploy.compose import render_compose
from refit.deploy.workflow import CHART_DIR, COMPOSE_DIR, WORKFLOW_FILE
from refit.examples import INCOMING
from refit.project import load_project
from stack import create_stack_project

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"
BIN = Path(sys.executable).parent
HELM_VALUES = ROOT / "src" / "refit" / "deploy" / "templates" / "helm" / "values.yaml"
EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")


def actionlint(*files: Path) -> subprocess.CompletedProcess[str]:
    binary, shellcheck = BIN / "actionlint", BIN / "shellcheck"
    if not binary.exists() or not shellcheck.exists():
        missing = "actionlint or shellcheck is missing: both are dev dependencies"
        if os.environ.get("CI"):
            pytest.fail(f"{missing}; CI must check the workflows, not skip it")
        pytest.skip(missing)
    return subprocess.run(
        [str(binary), "-no-color", "-shellcheck", str(shellcheck), *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def init(tmp_path: Path, *args: str) -> Path:
    root = tmp_path / "churn"
    assert run_app(app, ["init", str(root), *args]) == 0
    return root


def workflow(root: Path) -> dict[Any, Any]:
    loaded: dict[Any, Any] = yaml.safe_load((root / WORKFLOW_FILE).read_text())
    return loaded


def runs(jobs: dict[str, Any]) -> list[str]:
    return [step["run"] for job in jobs.values() for step in job["steps"] if "run" in step]


def test_refits_own_workflows_pass_actionlint() -> None:
    files = sorted([*WORKFLOWS.glob("*.yml"), *WORKFLOWS.glob("*.yaml")])
    assert WORKFLOWS / "ci.yml" in files
    result = actionlint(*files)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_ci_runs_the_commands_that_ci_runs_here() -> None:
    jobs = yaml.safe_load((WORKFLOWS / "ci.yml").read_text())["jobs"]
    commands = runs(jobs)
    # Every check of scripts/test, as it is written there, and the whole of .ci/run as root.
    script = (ROOT / "scripts" / "test").read_text()
    checks = [line.strip() for line in script.splitlines() if line.strip().startswith(".venv/")]
    assert checks, "scripts/test runs its tools from .venv/bin"
    for check in checks:
        if check.startswith(".venv/bin/pytest"):
            continue  # the pytest of .ci/run, and of the deploy files' job
        assert check in commands, f"ci.yml does not run {check!r} as scripts/test does"
    assert any(command.endswith("CI=true bash .ci/run") for command in commands)
    assert "source scripts/_venv.sh" in commands  # the virtualenv made as scripts/test makes it
    deploy_tests = next(c for c in commands if c.startswith(".venv/bin/pytest tests/deploy"))
    for path in deploy_tests.split()[1:]:
        assert (ROOT / path).exists(), path
    # The image is built as the README tells a person to build it.
    readme = (ROOT / "README.md").read_text()
    assert "docker build -t refit ." in readme and "docker build -t refit ." in commands


@pytest.mark.parametrize("example", [None, "breast-cancer"])
def test_refit_init_writes_a_workflow_that_passes_actionlint(
    tmp_path: Path, example: str | None
) -> None:
    root = init(tmp_path, *(["--example", example] if example else []))
    result = actionlint(root / WORKFLOW_FILE)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")
    jobs = workflow(root)["jobs"]
    assert set(jobs) == {"test", "retrain", "image", "deploy"}
    name = load_project(root).spec.name
    deploy = "\n".join(runs({"deploy": jobs["deploy"]}))
    assert f"helm upgrade --install {name} {CHART_DIR} " in deploy


def test_the_workflow_builds_what_refit_deploy_compose_writes_and_sets_the_charts_values(
    tmp_path: Path,
) -> None:
    root = init(tmp_path, "--example", "breast-cancer")
    text = (root / WORKFLOW_FILE).read_text()
    stack = load_project(create_stack_project(tmp_path / "stack"))
    assert "Dockerfile" in render_compose(stack, tmp_path / COMPOSE_DIR)
    assert f"-f project/{COMPOSE_DIR}/Dockerfile project" in text
    assert "docker build -t refit refit\n" in text  # FROM refit: built first, from refit's repo
    used = set(re.findall(r"\b(image\.repository|image\.tag|secret\.existingSecret)=", text))
    assert used == {"image.repository", "image.tag", "secret.existingSecret"}
    if not HELM_VALUES.exists():
        missing = f"{HELM_VALUES.relative_to(ROOT)} (refit deploy helm's values) is missing"
        if os.environ.get("CI"):
            pytest.fail(missing)
        pytest.skip(missing)
    values = yaml.safe_load(HELM_VALUES.read_text().replace("@@", "x"))
    for key in sorted(used):
        section, field = key.split(".")
        assert field in values[section], f"the chart has no value {key}"


def test_every_refit_variable_the_workflow_sets_is_a_field_of_the_spec(tmp_path: Path) -> None:
    root = init(tmp_path, "--example", "breast-cancer")
    names = set(
        re.findall(r"\b(REFIT_[A-Z0-9_]+__[A-Z0-9_]+):", (root / WORKFLOW_FILE).read_text())
    )
    assert "REFIT_STORAGE__METADATA_URL" in names
    samples = {name: f"value-{i}" for i, name in enumerate(sorted(names))}
    samples["REFIT_STORAGE__METADATA_URL"] = "postgresql+psycopg://refit@db/refit"
    spec: Any = load_project(root, environ=samples).spec
    for name, value in samples.items():
        node = spec
        for key in name.removeprefix("REFIT_").lower().split("__"):
            node = getattr(node, key)
        got = node.get_secret_value() if isinstance(node, SecretStr) else node
        assert got == value, name


@pytest.mark.slow
def test_the_test_job_trains_the_init_project_and_passes_its_gate(tmp_path: Path) -> None:
    root = init(tmp_path, "--example", "breast-cancer")
    step = next(
        step
        for step in workflow(root)["jobs"]["test"]["steps"]
        if step.get("working-directory") == "project" and "refit train" in step.get("run", "")
    )
    assert step["if"] == f"hashFiles('project/{INCOMING.as_posix()}/*') != ''"
    assert any((root / INCOMING).iterdir()), "refit init's example has data to train on"
    runner_temp = tmp_path / "runner-temp"
    runner_temp.mkdir()
    contexts = {"runner.temp": str(runner_temp)}
    env = {key: EXPRESSION.sub(lambda m: contexts[m.group(1)], v) for key, v in step["env"].items()}
    result = subprocess.run(
        ["bash", "-e", "-c", step["run"]],
        cwd=root,
        env={
            **os.environ,
            **env,
            "PATH": f"{BIN}:{os.environ['PATH']}",
            "RUNNER_TEMP": str(runner_temp),
        },
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (runner_temp / "refit.db").exists()
    assert not (root / ".refit").exists(), "the test job never touches the project's own stores"


def test_the_docs_name_every_secret_and_variable_the_project_workflow_reads(
    tmp_path: Path,
) -> None:
    text = (init(tmp_path) / WORKFLOW_FILE).read_text()
    doc = (ROOT / "docs" / "deploying.md").read_text()
    section = doc[doc.index("\n## CI/CD\n") :]
    names = set(re.findall(r"\b(?:secrets|vars)\.([A-Z][A-Z0-9_]*)", text)) - {"GITHUB_TOKEN"}
    assert "KUBECONFIG" in names
    for name in sorted(names):
        assert f"`{name}`" in section, f"docs/deploying.md, CI/CD, does not say what {name} is"
    ours = yaml.safe_load((WORKFLOWS / "ci.yml").read_text())["jobs"]
    for job in [*workflow(tmp_path / "churn")["jobs"], *ours]:
        assert f"| `{job}` |" in section, f"docs/deploying.md, CI/CD, does not describe {job}"


def test_the_workflows_and_the_checkov_skips_pass_yamllint(tmp_path: Path) -> None:
    config = ROOT / ".yamllint.yaml"  # refit's rules for its plain YAML
    if not config.exists() or importlib.util.find_spec("yamllint") is None:
        missing = "yamllint or .yamllint.yaml is missing (yamllint is a dev dependency)"
        if os.environ.get("CI"):
            pytest.fail(f"{missing}; CI must lint the workflows, not skip it")
        pytest.skip(missing)
    files = [*WORKFLOWS.glob("*.y*ml"), ROOT / "deploy" / "checkov-skips.yaml"]
    files.append(init(tmp_path, "--example", "breast-cancer") / WORKFLOW_FILE)
    result = subprocess.run(
        [sys.executable, "-m", "yamllint", "--strict", "-c", str(config), *map(str, files)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, "")
