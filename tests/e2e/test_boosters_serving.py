"""XGBoost and LightGBM models trained by refit and served by a real `refit serve`: through ONNX
Runtime when their conversion passed the parity check, answering as the native model does;
natively, saying why, when it did not."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from refit.data.ingest import run_ingest
from refit.examples import create_project, example_rows
from refit.flavors import load_model
from refit.project import load_project
from refit.services import open_services
from refit.signature import Signature
from refit.spec import SPEC_FILE, ArtifactFormat
from refit.train.run import run_training
from serving import serving

pytestmark = pytest.mark.slow

QUIET = {"lightgbm": {"verbose": -1}, "xgboost": {}}

#: name -> (example, estimator, extra params)
PROJECTS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "xgb-cancer": ("breast-cancer", "xgboost.XGBClassifier", {}),
    "lgbm-cancer": ("breast-cancer", "lightgbm.LGBMClassifier", {}),
    "xgb-diabetes": ("diabetes", "xgboost.XGBRegressor", {}),
    "lgbm-diabetes": ("diabetes", "lightgbm.LGBMRegressor", {}),
    # onnxmltools converts the trees, not the linear models in their leaves: parity fails.
    "lgbm-linear": ("diabetes", "lightgbm.LGBMRegressor", {"linear_tree": True}),
}
TARGETS = {"breast-cancer": "diagnosis", "diabetes": "progression"}


def booster_project(root: Path, name: str) -> Path:
    """The example of project `name`, with its booster, ingested and v1 in production."""
    example, estimator, params = PROJECTS[name]
    create_project(root, example)
    spec = yaml.safe_load((root / SPEC_FILE).read_text())
    spec["name"] = name
    spec["model"]["estimator"] = estimator
    spec["model"]["params"] = {"n_estimators": 25, **QUIET[estimator.split(".")[0]], **params}
    spec["gate"] = {"min_improvement": 0.0}
    (root / SPEC_FILE).write_text(yaml.safe_dump(spec, sort_keys=False))
    with open_services(load_project(root)) as services:
        assert run_ingest(services.project, services.registry, services.store).status == "accepted"
        assert run_training(services).promoted
    return root


def records(example: str) -> list[dict[str, Any]]:
    """The example's last 40 rows (those the first batch left out), as a client sends them."""
    rows = example_rows(example).drop(columns=TARGETS[example]).tail(40)
    parsed: list[dict[str, Any]] = json.loads(rows.to_json(orient="records"))
    return parsed


def native(root: Path, inputs: list[dict[str, Any]]) -> tuple[Any, Any]:
    """What the version in production answers when asked directly: labels or values, and the
    class probabilities (None for a regressor)."""
    with open_services(load_project(root)) as services:
        row = services.registry.get_version(services.project.spec.name, 1)
        data = services.store.get(row.artifact_uri, row.artifact_sha256)
    model = load_model(data, ArtifactFormat(row.format), row.flavor)
    frame = pd.DataFrame(inputs)[Signature.from_dict(row.signature).names]
    proba = model.predict_proba(frame) if hasattr(model, "predict_proba") else None
    return model.predict(frame), proba


def test_boosters_serve_through_onnx_runtime_when_parity_holds_and_natively_otherwise(
    tmp_path: Path,
) -> None:
    roots = {name: booster_project(tmp_path / name, name) for name in PROJECTS}
    first, *others = roots.values()
    options = tuple(arg for root in others for arg in ("-p", str(root)))
    with serving(first, 1, options=options) as server:
        listed = {m["name"]: m for m in server.http.get("/v1/models").json()["models"]}
        assert list(listed) == list(PROJECTS)
        for name, root in roots.items():
            served = listed[name]["served"]
            assert served is not None and served["version"] == 1, listed[name]
            if name == "lgbm-linear":
                assert served["runtime"] == "native"
                assert served["onnx"].startswith("parity failed: values differ by up to ")
            else:
                assert (served["runtime"], served["onnx"]) == ("onnx", None), served
            example = PROJECTS[name][0]
            inputs = records(example)
            response = server.http.post(
                f"/v1/models/{name}/predict/batch", json={"records": inputs}
            )
            assert response.status_code == 200, response.text
            body = response.json()
            want, want_proba = native(root, inputs)
            if want_proba is None:
                got = np.asarray(body["predictions"], dtype=float)
                assert np.allclose(got, want.astype(float), rtol=1e-4), name
                continue
            classes = listed[name]["served"]["signature"]["output"]["classes"]
            got_proba = np.asarray([[p[c] for c in classes] for p in body["probabilities"]])
            assert np.abs(got_proba - want_proba).max() < 1e-5, name
            assert body["predictions"] == [str(label) for label in want], name
