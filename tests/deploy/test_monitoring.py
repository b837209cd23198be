"""`refit deploy monitoring`: the alert rules under promtool's checks and unit tests, the
Compose stack's Prometheus config under `promtool check config` and Docker Compose, and the
Grafana dashboards, whose every expression must parse and name a metric that a live `refit
serve` and `refit scheduler` export."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_specs import set_schedule
from test_compose import compose, resolved, tree

from refit.deploy.compose import render_compose
from refit.deploy.files import write_files
from refit.deploy.monitoring import (
    DASHBOARDS,
    PROBE_ROUTES,
    RULE_TESTS,
    RULES,
    SCHEDULER_JOB,
    SERVE_JOB,
    render_monitoring,
)
from refit.project import load_project
from refit.spec import SPEC_FILE
from servers import free_port
from serving import NAME, Server, example_records, make_project, serving, stop, wait_until
from stack import create_stack_project

ROOT = Path(__file__).resolve().parents[2]
BUNDLED = ROOT / "deploy" / "monitoring"
STACK = ROOT / "deploy" / "compose"
MISSING = "promtool is not installed: apt-get install prometheus (.ci/run installs it)"


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail(f"{MISSING}; CI must run these checks, not skip them")
        pytest.skip(MISSING)
    return subprocess.run(
        [binary, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def alerts(rules: Path) -> list[dict[str, Any]]:
    groups = yaml.safe_load(rules.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


# --- the rendering ----------------------------------------------------------------------------


def test_the_bundled_folder_is_what_rendering_its_project_gives(tmp_path: Path) -> None:
    checkout = tmp_path / "refit"  # laid out as the repository: deploy/compose, deploy/monitoring
    stack = checkout / "deploy" / "compose"
    project = load_project(create_stack_project(stack / "project"))
    (checkout / "Dockerfile").write_bytes((ROOT / "Dockerfile").read_bytes())
    write_files(stack, render_compose(project, stack, feed=True, refit_source=checkout))
    out = checkout / "deploy" / "monitoring"
    write_files(out, render_monitoring(project, out, stack=stack))
    assert tree(out) == tree(BUNDLED), (
        "deploy/monitoring/ differs from a new rendering: run `refit deploy monitoring -p "
        "deploy/compose/project deploy/monitoring --compose deploy/compose --force` and commit it"
    )


def test_without_a_stack_only_the_rules_and_dashboards_are_written(tmp_path: Path) -> None:
    project = load_project(create_stack_project(tmp_path / "project"))
    names = set(render_monitoring(project, tmp_path / "out"))
    assert names == {
        RULES,
        RULE_TESTS,
        f"{DASHBOARDS}/refit-loop.json",
        f"{DASHBOARDS}/refit-serving.json",
    }


def refit(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "refit", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_folder_that_holds_no_stack_is_refused(tmp_path: Path) -> None:
    create_stack_project(tmp_path / "project")
    result = refit(
        "deploy", "monitoring", "-p", "project", "out", "--compose", "project", cwd=tmp_path
    )
    assert result.returncode == 2
    assert "no compose.yaml in project: give the folder `refit deploy compose` wrote" in (
        " ".join(result.stderr.split())
    )
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


# --- the rules --------------------------------------------------------------------------------


def test_promtool_checks_the_rules() -> None:
    result = promtool("check", "rules", RULES, cwd=BUNDLED)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alerts(BUNDLED / RULES))} rules found" in result.stdout


def test_promtool_unit_tests_of_the_rules_pass() -> None:
    result = promtool("test", "rules", RULE_TESTS, cwd=BUNDLED)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_unit_tests_catch_a_rule_that_changes(tmp_path: Path) -> None:
    for name in (RULES, RULE_TESTS):
        shutil.copy(BUNDLED / name, tmp_path / name)
    text = (tmp_path / RULES).read_text()
    (tmp_path / RULES).write_text(text.replace("seconds > 86400", "seconds > 172800"))
    result = promtool("test", "rules", RULE_TESTS, cwd=tmp_path)
    assert result.returncode != 0
    assert "alertname: RefitNoNewSnapshot" in result.stdout + result.stderr


def test_every_alert_is_tested_firing_and_quiet_with_its_severity_and_annotations() -> None:
    tests = yaml.safe_load((BUNDLED / RULE_TESTS).read_text())
    cases = [case for test in tests["tests"] for case in test["alert_rule_test"]]
    for alert in alerts(BUNDLED / RULES):
        name = alert["alert"]
        assert alert["labels"]["severity"] in {"critical", "warning"}, name
        assert {"summary", "description"} <= set(alert["annotations"]), name
        mine = [case for case in cases if case["alertname"] == name]
        assert any(case["exp_alerts"] for case in mine), f"{name} is never tested firing"
        assert any(not case["exp_alerts"] for case in mine), f"{name} is never tested quiet"
    # The rules name the jobs the Compose stack's Prometheus scrapes.
    config = yaml.safe_load((BUNDLED / "prometheus.yml").read_text())
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    assert jobs == {SERVE_JOB, SCHEDULER_JOB}
    assert f'up{{job="{SERVE_JOB}"}} == 0' in (BUNDLED / RULES).read_text()


# --- Prometheus and Grafana beside the Compose stack ------------------------------------------


def test_promtool_checks_the_stacks_prometheus_config() -> None:
    result = promtool("check", "config", "prometheus.yml", cwd=BUNDLED)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 1 rule files found" in result.stdout


def test_compose_reads_the_stack_with_prometheus_and_grafana() -> None:
    check = compose(BUNDLED, "config", "--quiet")
    assert (check.returncode, check.stderr) == (0, "")
    config = resolved(BUNDLED)
    services = config["services"]
    # The stack as it is, and two services beside it.
    assert set(services) == set(resolved(STACK)["services"]) | {"prometheus", "grafana"}
    prometheus, grafana = services["prometheus"], services["grafana"]
    assert prometheus["image"] == "prom/prometheus:v3.1.0"
    assert grafana["image"] == "grafana/grafana:11.4.0"
    # Loopback only: neither is meant for the network.
    for service, port in ((prometheus, 9090), (grafana, 3000)):
        assert [(p["host_ip"], p["target"]) for p in service["ports"]] == [("127.0.0.1", port)]
    mounted = {c["target"]: config["configs"][c["source"]]["file"] for c in prometheus["configs"]}
    assert mounted == {
        "/etc/prometheus/prometheus.yml": str(BUNDLED / "prometheus.yml"),
        "/etc/prometheus/refit.rules.yml": str(BUNDLED / RULES),
    }
    provisioned = {c["target"]: config["configs"][c["source"]]["file"] for c in grafana["configs"]}
    assert provisioned == {
        "/etc/grafana/provisioning/datasources/refit.yml": str(BUNDLED / "grafana/datasource.yml"),
        "/etc/grafana/provisioning/dashboards/refit.yml": str(BUNDLED / "grafana/dashboards.yml"),
    }
    binds = {v["target"]: v["source"] for v in grafana["volumes"] if v["type"] == "bind"}
    provider = yaml.safe_load((BUNDLED / "grafana/dashboards.yml").read_text())["providers"][0]
    assert binds == {provider["options"]["path"]: str(BUNDLED / DASHBOARDS)}
    assert grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == "example-only-change-me"
    assert grafana["depends_on"]["prometheus"]["condition"] == "service_healthy"
    datasource = yaml.safe_load((BUNDLED / "grafana/datasource.yml").read_text())
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"
    # It scrapes each server replica by the service's name, and the scheduler on its port.
    scrape = {
        job["job_name"]: job
        for job in yaml.safe_load((BUNDLED / "prometheus.yml").read_text())["scrape_configs"]
    }
    assert scrape[SERVE_JOB]["dns_sd_configs"] == [
        {"names": ["serve"], "type": "A", "port": 8000, "refresh_interval": "15s"}
    ]
    port = services["scheduler"]["expose"][0]
    assert scrape[SCHEDULER_JOB]["static_configs"] == [{"targets": [f"scheduler:{port}"]}]


def test_a_stack_without_metrics_has_a_prometheus_that_scrapes_the_servers_alone(
    tmp_path: Path,
) -> None:
    root = create_stack_project(tmp_path / "project")
    set_schedule(root, metrics_port=None)
    stack, out = tmp_path / "stack", tmp_path / "monitoring"
    assert refit("deploy", "compose", "-p", str(root), str(stack), cwd=tmp_path).returncode == 0
    result = refit(
        "deploy", "monitoring", "-p", str(root), str(out), "--compose", str(stack), cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert compose(out, "config", "--quiet").returncode == 0
    # Grafana's password is readable by its owner alone (git keeps no such mode: the bundled
    # copy is checked out 0644, so the rendering is what is checked).
    assert (out / ".env").stat().st_mode & 0o777 == 0o600
    config = yaml.safe_load((out / "prometheus.yml").read_text())
    assert [job["job_name"] for job in config["scrape_configs"]] == [SERVE_JOB]
    assert promtool("check", "config", "prometheus.yml", cwd=out).returncode == 0


# --- the dashboards ---------------------------------------------------------------------------

# Grafana's own variables, as a query would read once Grafana has replaced them.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$model": ".*"}
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right"}
KEYWORDS |= {"and", "or", "unless", "bool", "offset", "inf", "nan"}


def dashboards() -> dict[str, dict[str, Any]]:
    return {
        path.name: json.loads(path.read_text())
        for path in sorted((BUNDLED / DASHBOARDS).glob("*.json"))
    }


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def expressions() -> list[tuple[str, str]]:
    """(where, PromQL) for every target of every panel of every dashboard."""
    found = []
    for name, dashboard in dashboards().items():
        for panel in panels(dashboard):
            for target in panel.get("targets", []):
                found.append((f"{name}: {panel['title']} {target['refId']}", target["expr"]))
    return found


def as_prometheus_reads(expression: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expression = expression.replace(variable, value)
    return expression


def metric_names(expression: str) -> set[str]:
    """The metric names an expression reads: identifiers outside strings, label matchers,
    ranges and grouping lists that are neither functions nor keywords."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expression)
    text = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][\w:]*", text):
        rest = text[match.end() :].lstrip()
        if match.group() not in KEYWORDS and not rest.startswith("("):
            names.add(match.group())
    return names


def test_the_dashboards_are_recent_grafana_json_with_a_datasource_variable() -> None:
    found = dashboards()
    assert set(found) == {"refit-loop.json", "refit-serving.json"}
    uids = set()
    for name, dashboard in found.items():
        assert dashboard["schemaVersion"] >= 39, name
        uids.add(dashboard["uid"])
        variables = {v["name"]: v for v in dashboard["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource"
        assert variables["datasource"]["query"] == "prometheus"
        ids = [panel["id"] for panel in panels(dashboard)]
        assert len(ids) == len(set(ids)), name
        for panel in panels(dashboard):
            if panel["type"] != "row":
                assert panel["datasource"]["uid"] == "${datasource}", (name, panel["title"])
                assert panel["targets"] and panel["description"], (name, panel["title"])
    assert len(uids) == 2
    titles = {panel["title"] for dashboard in found.values() for panel in panels(dashboard)}
    for wanted in ("Requests/s by route", "p99 latency by route", "Rows per model call"):
        assert wanted in titles
    for wanted in ("Swaps and refusals", "Gate decisions", "Training runs by status"):
        assert wanted in titles
    assert {"Drift score by feature", "Live quality vs estimated"} <= titles
    # The API's traffic leaves out the probes and the scrape, as the rules do.
    for where, expression in expressions():
        if "refit_request" in expression:
            assert f'route!~"{PROBE_ROUTES}"' in expression, where


def test_every_dashboard_expression_parses(tmp_path: Path) -> None:
    # promtool parses each as the expression of a recording rule, with Prometheus' own parser.
    found = expressions()
    assert len(found) > 30
    rules = [
        {"record": f"refit:dashboard_{index}", "expr": as_prometheus_reads(expression)}
        for index, (_, expression) in enumerate(found)
    ]
    (tmp_path / "dashboards.rules.yml").write_text(
        yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]})
    )
    result = promtool("check", "rules", "dashboards.rules.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(found)} rules found" in result.stdout


def test_the_parse_check_and_the_name_check_find_what_breaks_them(tmp_path: Path) -> None:
    broken = 'sum by (route) (rate(refit_requests_total{job="refit-serve"}[1m])'
    rules = {"groups": [{"name": "broken", "rules": [{"record": "x", "expr": broken}]}]}
    (tmp_path / "broken.rules.yml").write_text(yaml.safe_dump(rules))
    assert promtool("check", "rules", "broken.rules.yml", cwd=tmp_path).returncode != 0
    expression = (
        "histogram_quantile(0.99, sum by (le, instance) (rate(refit_request_durations_bucket"
        '{job="refit-serve",route!~"/health/.*"}[$__rate_interval]))) > on (instance) '
        "refit_model_version"
    )
    assert metric_names(as_prometheus_reads(expression)) == {
        "refit_request_durations_bucket",
        "refit_model_version",
    }


# --- the metrics a live server and scheduler export -------------------------------------------


def scraped_names(body: str) -> set[str]:
    """The names of the samples an exposition holds, and those its TYPE lines declare (a
    family with no sample yet, such as drift before the first report, still has its name)."""
    suffixes = {
        "counter": ("_total",),
        "histogram": ("_bucket", "_count", "_sum"),
        "gauge": ("",),
    }
    names = set()
    for line in body.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            names |= {f"{name}{suffix}" for suffix in suffixes.get(kind, ("",))}
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


REPORTED_ROWS = 150  # above monitor.min_rows: enough for a report to judge drift


@dataclass
class Live:
    """A real `refit serve` and `refit scheduler` of one project, on 127.0.0.1."""

    project: Path
    server: Server
    scheduler: str
    """The scheduler's /metrics URL."""


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    project = make_project(tmp_path_factory.mktemp("monitoring") / "p")
    set_schedule(project, ingest=None, train=None, monitor=None)  # it only serves /metrics
    spec = yaml.safe_load((project / SPEC_FILE).read_text())
    spec.setdefault("monitor", {})["flush_seconds"] = 0.2  # the log written at once
    (project / SPEC_FILE).write_text(yaml.safe_dump(spec, sort_keys=False))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFIT_")}
    args = [sys.executable, "-m", "refit", "scheduler", "-p", str(project)]
    args += ["--host", "127.0.0.1", "--metrics-port", str(port)]
    log = project.parent / "scheduler.log"
    with log.open("wb") as output:
        scheduler = subprocess.Popen(args, env=env, stdout=output, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        deadline = time.monotonic() + 90
        while f"metrics: {url}" not in log.read_text(errors="replace"):
            if scheduler.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"refit scheduler did not serve /metrics:\n{log.read_text()}")
            time.sleep(0.2)
        with serving(project, workers=1) as server:
            yield Live(project, server, url)
    finally:
        assert stop(scheduler) == 0, log.read_text(errors="replace")


def read(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as answer:
        body: bytes = answer.read()
    return body.decode()


@pytest.fixture(scope="module")
def exported(live: Live) -> set[str]:
    """Every metric name the live server (after predictions) and scheduler (after a training
    run and a monitor report) export, and Prometheus' own `up`."""
    records = example_records(REPORTED_ROWS)
    assert live.server.http.post("/predict", json=records[0]).status_code == 200
    batch = live.server.http.post("/predict/batch", json={"records": records})
    assert batch.status_code == 200
    logged = f'refit_prediction_log_written_rows_total{{kind="predictions",model="{NAME}"}}'
    wait_until(
        "the server logs its predictions",
        lambda: f"{logged} {float(REPORTED_ROWS + 1)}" in live.server.http.get("/metrics").text,
        within=30,
    )
    served = live.server.http.get("/metrics")
    assert served.status_code == 200
    # The monitor's report on those rows: drift per feature, from the scheduler's /metrics.
    report = refit("monitor", "-p", str(live.project), cwd=live.project)
    assert report.returncode == 0, report.stdout + report.stderr
    registry = read(live.scheduler)
    assert "refit_scheduler_scrape_error 0.0" in registry
    assert f'refit_training_runs_total{{model="{NAME}",status="succeeded"' in registry
    assert f'refit_monitor_report_rows{{model="{NAME}"}} {float(REPORTED_ROWS + 1)}' in registry
    assert f'refit_drift_score{{feature="mean_radius",model="{NAME}"}}' in registry
    return scraped_names(served.text) | scraped_names(registry) | {"up"}


@pytest.mark.slow
def test_every_dashboard_expression_names_only_metrics_refit_exports(exported: set[str]) -> None:
    assert {"refit_predicted_rows_total", "refit_batch_rows_bucket"} <= exported
    assert {"refit_drift_score", "refit_live_quality", "refit_snapshots_total"} <= exported
    unknown = {}
    used: set[str] = set()
    for where, expression in expressions():
        names = metric_names(as_prometheus_reads(expression))
        assert names, f"{where} reads no metric: {expression}"
        used |= names
        if missing := names - exported:
            unknown[where] = sorted(missing)
    assert unknown == {}, "metrics no refit process exports"
    # Every family refit exports is on a dashboard but these: probes of the scrape itself.
    families = {name for name in exported if name.startswith("refit_")}
    assert len(used & families) >= 25


@pytest.mark.slow
def test_every_rule_names_only_metrics_refit_exports(exported: set[str]) -> None:
    unknown = {}
    for alert in alerts(BUNDLED / RULES):
        names = metric_names(alert["expr"])
        assert names, alert["alert"]
        if missing := names - exported:
            unknown[alert["alert"]] = sorted(missing)
    assert unknown == {}, "metrics no refit process exports"


# --- a real Prometheus with the rules, on the live server and scheduler ----------------------


@pytest.fixture(scope="module")
def prometheus(
    tmp_path_factory: pytest.TempPathFactory, live: Live, exported: set[str]
) -> Iterator[str]:
    """Debian's Prometheus, scraping the live processes as the jobs the rules name, with
    `refit.rules.yml` loaded; its URL."""
    binary = shutil.which("prometheus")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail(f"{MISSING}; CI must run these checks, not skip them")
        pytest.skip(MISSING)
    folder = tmp_path_factory.mktemp("prometheus")
    shutil.copy(BUNDLED / RULES, folder / RULES)
    targets = {
        SERVE_JOB: live.server.url.removeprefix("http://"),
        SCHEDULER_JOB: live.scheduler.removeprefix("http://").removesuffix("/metrics"),
    }
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [RULES],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": [target]}]}
            for job, target in targets.items()
        ],
    }
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    args = [
        binary,
        f"--config.file={folder / 'prometheus.yml'}",
        f"--storage.tsdb.path={folder / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    log = folder / "prometheus.log"
    with log.open("wb") as output:
        process = subprocess.Popen(args, stdout=output, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(url, lambda: query(url, "sum(up)") == [2.0], log)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def api(url: str, path: str, **params: str) -> Any:
    answer = json.loads(read(f"{url}/api/v1/{path}?{urllib.parse.urlencode(params)}"))
    assert answer["status"] == "success", answer
    return answer["data"]


def query(url: str, expression: str) -> list[float]:
    return [float(series["value"][1]) for series in api(url, "query", query=expression)["result"]]


def wait_for(url: str, check: Any, log: Path, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"Prometheus never got there:\n{log.read_text(errors='replace')[-3000:]}")


@pytest.mark.slow
def test_a_real_prometheus_evaluates_the_rules_and_the_dashboards_on_live_refit(
    prometheus: str,
) -> None:
    def evaluated() -> list[dict[str, Any]]:
        groups = api(prometheus, "rules")["groups"]
        return [rule for group in groups for rule in group["rules"]]

    wanted = {alert["alert"] for alert in alerts(BUNDLED / RULES)}
    wait_for(
        prometheus,
        lambda: (
            {r["name"] for r in evaluated() if r.get("lastEvaluation", "0001")[:4] != "0001"}
            >= wanted
        ),
        Path(os.devnull),
    )
    # Every rule evaluates on refit's live series without error, and a healthy loop (its server
    # up and on production's version, its registry readable) fires none of them.
    assert {(r["name"], r["health"], r.get("lastError", "")) for r in evaluated()} == {
        (name, "ok", "") for name in wanted
    }
    firing = {r["name"] for r in evaluated() if r["state"] != "inactive"}
    assert firing == set()
    assert query(prometheus, f'refit_model_version{{job="{SERVE_JOB}"}}') == [1.0]
    # Every dashboard query runs, and those of the live loop's state have data.
    for _, expression in expressions():
        api(prometheus, "query", query=as_prometheus_reads(expression))
    for expression in (
        "max by (model) (refit_model_version)",
        'sum(refit_predicted_rows_total{model="breast-cancer"})',
        "refit_snapshots_total",
        "refit_model_version_metric",
        "refit_drift_score",
        'sum(refit_prediction_log_written_rows_total{kind="predictions"})',
    ):
        assert query(prometheus, expression), expression
