"""Feedback to a real `refit serve`: true labels named by the ids of its answers are written
to the feedback log, where they join the logged predictions by request id and row."""

from __future__ import annotations

from pathlib import Path

import pytest

from refit.prediction_logs import PREDICTION, REQUEST_ID, ROW, VALUE, read_logs
from refit.project import load_project
from refit.registry.monitoring import FEEDBACK, PREDICTIONS, list_logs
from refit.services import open_services
from serving import NAME, example_records, make_project, serving

pytestmark = pytest.mark.slow


def test_feedback_joins_the_logged_predictions_by_request_id_and_row(tmp_path: Path) -> None:
    project = make_project(tmp_path / "project")
    records = example_records(6)
    told = []
    with serving(project, 2) as server:
        one = server.http.post("/predict", json=records[0])
        many = server.http.post("/predict/batch", json={"records": records[1:]})
        assert one.status_code == many.status_code == 200
        first, batch = one.json(), many.json()
        told.append({"id": first["id"], "value": first["prediction"]})
        for row, label in enumerate(batch["predictions"]):
            told.append({"id": batch["id"], "row": row, "value": label})
        accepted = server.http.post(f"/v1/models/{NAME}/feedback", json={"feedback": told})
        assert (accepted.status_code, accepted.json()) == (202, {"accepted": 6})
        refused = server.http.post(
            f"/v1/models/{NAME}/feedback", json={"id": first["id"], "value": "unknown"}
        )
        assert refused.status_code == 422
        assert refused.json()["error"]["problems"][0]["field"] == "value"
    with open_services(load_project(project)) as services:
        feedback = read_logs(services.store, list_logs(services.registry, NAME, FEEDBACK))
        predictions = read_logs(services.store, list_logs(services.registry, NAME, PREDICTIONS))
    assert len(feedback) == 6
    joined = feedback.merge(predictions, on=[REQUEST_ID, ROW], how="left")
    assert joined[PREDICTION].notna().all()
    assert (joined[VALUE] == joined[PREDICTION]).all()  # the labels told are those answered
