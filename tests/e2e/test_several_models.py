"""One `refit serve` of several projects' models: each follows its own production and swaps on
its own, on every protocol, and one that fails to load leaves the others serving."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from refit.data.ingest import run_ingest
from refit.examples import create_project, example_rows
from refit.project import load_project
from refit.services import open_services
from refit.spec import SPEC_FILE
from refit.train.run import run_training
from serving import NAME, example_records, make_project, move_production, register_copies, serving

pytestmark = pytest.mark.slow

DIABETES, BROKEN = "diabetes", "cancer-b"


def trained(root: Path, example: str, name: str | None = None) -> Path:
    """The example `example` (renamed `name`), ingested, with v1 in production."""
    create_project(root, example)
    if name is not None:
        spec = yaml.safe_load((root / SPEC_FILE).read_text())
        spec["name"] = name
        (root / SPEC_FILE).write_text(yaml.safe_dump(spec, sort_keys=False))
    with open_services(load_project(root)) as services:
        assert run_ingest(services.project, services.registry, services.store).status == "accepted"
        assert run_training(services).promoted
    return root


def damaged(root: Path) -> Path:
    """`root` with every artifact of its v1 damaged: no worker can load its production."""
    with open_services(load_project(root)) as services:
        version = services.registry.get_version(load_project(root).spec.name, 1)
        uris = [version.artifact_uri, *([version.onnx["uri"]] if version.onnx else [])]
    for uri in uris:
        path = root / ".refit" / "artifacts" / uri
        path.write_bytes(path.read_bytes()[:-10] + b"0123456789")
    return root


def diabetes_record() -> dict[str, Any]:
    row = example_rows(DIABETES).drop(columns="progression").iloc[0]
    record: dict[str, Any] = json.loads(row.to_json())
    return record


def metric(text: str, name: str, model: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels.get("model") == model:
                return sample.value
    raise AssertionError(f"no {name}{{model={model!r}}} in the metrics")


def test_one_server_serves_several_models_and_a_broken_one_affects_none(tmp_path: Path) -> None:
    cancer = make_project(tmp_path / "cancer")
    diabetes = trained(tmp_path / "diabetes", DIABETES)
    broken = damaged(trained(tmp_path / "broken", NAME, BROKEN))
    options = ("-p", str(diabetes), "-p", str(broken))
    with serving(cancer, 2, options=options) as server:
        http = server.http
        listed = {m["name"]: m for m in http.get("/v1/models").json()["models"]}
        assert list(listed) == [NAME, DIABETES, BROKEN]
        assert listed[NAME]["ready"] and listed[DIABETES]["ready"]
        assert not listed[BROKEN]["ready"]
        assert listed[BROKEN]["reason"].startswith("v1 failed to load: artifact corrupt")

        # refit's routes: the default model without a name, each model by its name.
        record = example_records(1)[0]
        default = http.post("/predict", json=record).json()
        assert (default["model"], default["version"]) == (NAME, 1)
        named = http.post(f"/v1/models/{DIABETES}/predict", json=diabetes_record())
        assert named.status_code == 200 and named.json()["model"] == DIABETES
        assert isinstance(named.json()["prediction"], float)
        refused = http.post(f"/v1/models/{BROKEN}/predict", json=record)
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "unavailable"
        unknown = http.post("/v1/models/nothing/predict", json=record)
        assert unknown.status_code == 404 and DIABETES in unknown.json()["error"]["message"]

        # Open Inference V2: each model by its name; the server is ready only when all are.
        values = diabetes_record()
        v2 = {
            "inputs": [
                {
                    "name": name,
                    "shape": [1],
                    "datatype": "BYTES" if isinstance(value, str) else "FP64",
                    "data": [value],
                }
                for name, value in values.items()
            ]
        }
        inferred = http.post(f"/v2/models/{DIABETES}/infer", json=v2)
        assert inferred.status_code == 200 and inferred.json()["model_name"] == DIABETES
        assert http.get(f"/v2/models/{DIABETES}/ready").status_code == 200
        assert http.get(f"/v2/models/{BROKEN}/ready").status_code == 503
        assert http.get("/v2/health/ready").status_code == 503
        # Readiness of the server (Kubernetes' probe) follows the default model alone.
        assert http.get("/health/ready").status_code == 200

        # MLflow's /invocations answers with the default model.
        invoked = http.post("/invocations", json={"dataframe_records": [record]})
        assert invoked.json() == {"predictions": [default["prediction"]]}

        # Each model follows its own production: a promotion swaps that model alone.
        with open_services(load_project(cancer)) as services:
            [second] = register_copies(services, 1, 1)
            move_production(services.registry, NAME, second)
        server.converge(second, workers=2)
        again = {m["name"]: m for m in http.get("/v1/models").json()["models"]}
        assert again[DIABETES]["serving"] == 1 and again[NAME]["serving"] == second

        metrics = http.get("/metrics").text
        assert metric(metrics, "refit_predicted_rows_total", DIABETES) >= 2
        assert metric(metrics, "refit_model_version", DIABETES) == 1
        assert metric(metrics, "refit_model_version", BROKEN) == 0
        assert metric(metrics, "refit_model_refused_version", BROKEN) == 1
        assert metric(metrics, "refit_batch_rows_count", DIABETES) >= 2


def test_two_projects_of_one_name_are_refused_before_serving(tmp_path: Path) -> None:
    cancer = make_project(tmp_path / "cancer")
    again = make_project(tmp_path / "again")
    done = subprocess.run(
        [sys.executable, "-m", "refit", "serve", "-p", str(cancer), "-p", str(again)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert f"two of the projects served are named {NAME!r}" in done.stderr
