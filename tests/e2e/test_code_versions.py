"""A version's own code in a real `refit serve`: the hooks answer as they did at training, and
a server runs the code each version was trained with, whatever the project's files now say."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from refit.data.ingest import run_ingest
from refit.examples import create_project
from refit.parquet import read_snapshot
from refit.project import load_project
from refit.services import Services, open_services
from refit.spec import SPEC_FILE
from refit.train.promotion import promote_version
from refit.train.run import run_training
from refit.train.split import split
from serving import NAME, Server, serving

pytestmark = pytest.mark.slow

FEATURES = """
def features(frame):
    if (frame["mean_radius"] < 0).any():
        raise ValueError("a radius is never negative")
    out = frame[["mean_radius", "mean_texture", "mean_smoothness"]].copy()
    out["compactness"] = frame["mean_perimeter"] ** 2 / frame["mean_area"]
    return out
"""
CODE_A = (
    FEATURES
    + """

def postprocess(record, prediction):
    return prediction
"""
)
CODE_B = (
    FEATURES
    + """

OTHER = {"benign": "malignant", "malignant": "benign"}


def postprocess(record, prediction):
    return {**prediction, "prediction": OTHER[prediction["prediction"]]}
"""
)
FLIPPED = {"benign": "malignant", "malignant": "benign"}


def write_code(root: Path, source: str) -> None:
    (root / "hooks.py").write_text(textwrap.dedent(source), "utf-8")


def opened(root: Path) -> Services:
    return open_services(load_project(root))


def hooked_project(root: Path) -> Path:
    create_project(root, NAME)
    write_code(root, CODE_A)
    spec = yaml.safe_load((root / SPEC_FILE).read_text("utf-8"))
    spec["model"].update(
        {
            "estimator": "sklearn.linear_model.LogisticRegression",
            "params": {"max_iter": 2000},
            "features": "hooks:features",
            "postprocess": "hooks:postprocess",
        }
    )
    (root / SPEC_FILE).write_text(yaml.safe_dump(spec, sort_keys=False), "utf-8")
    with opened(root) as services:
        assert run_ingest(services.project, services.registry, services.store).status == "accepted"
    return root


def holdout_records(services: Services) -> list[dict[str, Any]]:
    spec = services.project.spec
    snapshot = services.registry.latest_snapshot(NAME)
    assert snapshot is not None
    parts = split(read_snapshot(services.store, snapshot), spec.data, spec.model)
    rows = parts.holdout[list(spec.data.features)]
    return [{str(k): float(v) for k, v in row.items()} for row in rows.to_dict("records")]


def answers(server: Server, records: list[dict[str, Any]]) -> tuple[int, list[str]]:
    response = server.http.post("/predict/batch", json={"records": records})
    assert response.status_code == 200, response.text
    body = response.json()
    return body["version"], body["predictions"]


def test_the_server_answers_as_training_did_and_runs_each_version_s_own_code(
    tmp_path: Path,
) -> None:
    root = hooked_project(tmp_path / "p")
    with opened(root) as services:
        first = run_training(services)
        records = holdout_records(services)
    assert first.promoted and first.version.reference is not None
    trained = first.version.reference["predictions"][: len(records)]
    assert len(trained) == len(records) > 20

    with serving(root, workers=1) as before:
        before.converge(1, workers=1, streak=1)
        # What training answered on its holdout is what the server answers for those rows.
        assert answers(before, records) == (1, trained)

        # The hook fails on one request's rows: that request fails, as the server's fault;
        # the next is answered.
        negative = {**records[0], "mean_radius": -1.0}
        failed = before.http.post("/predict", json=negative)
        assert failed.status_code == 500, failed.text
        assert (
            "model.features hooks:features raised ValueError" in failed.json()["error"]["message"]
        )
        assert answers(before, records[:3]) == (1, trained[:3])
        metrics = before.http.get("/metrics").text
        assert 'refit_requests_total{route="/predict",status="500"} 1.0' in metrics

        # The project's code changes, and v2 is trained with it; v1 holds production.
        write_code(root, CODE_B)
        with opened(root) as services:
            second = run_training(services)
        assert not second.promoted and second.version.version == 2
        assert first.version.code is not None and second.version.code is not None
        assert first.version.code["sha256"] != second.version.code["sha256"]
        # The gate scored v1 with v1's own code on v2's holdout.
        assert second.decision.champion_value is not None

        assert answers(before, records) == (1, trained)
        with serving(root, workers=1) as after:
            # Started with the new code on disk, it serves v1 with v1's code.
            after.converge(1, workers=1, streak=1)
            assert answers(after, records) == (1, trained)

            with opened(root) as services:
                promote_version(services.registry, NAME, 2, "test", store=services.store)
            flipped = [FLIPPED[label] for label in trained]
            for server in (before, after):
                server.converge(2, workers=1, streak=1)
                assert answers(server, records) == (2, flipped)
