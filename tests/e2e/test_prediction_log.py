"""Prediction logging by a real `refit serve`: every answered row of every worker is in the
log once the server has stopped on SIGTERM (what was buffered is written at the drain), and
`/metrics` sums the buffers of the workers."""

from __future__ import annotations

import collections
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from refit.prediction_logs import REQUEST_ID, ROW, read_logs
from refit.project import load_project
from refit.registry.monitoring import PREDICTIONS, list_logs
from refit.services import open_services
from serving import NAME, example_records, make_project, serving, wait_until

pytestmark = pytest.mark.slow

HOLD = {"REFIT_MONITOR__FLUSH_ROWS": "100000", "REFIT_MONITOR__FLUSH_SECONDS": "3600"}
"""Nothing is written while the server runs: only its shutdown writes."""


def metric(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    raise AssertionError(f"no {name} {labels}")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_project(tmp_path_factory.mktemp("prediction-log") / "project")


def test_sigterm_writes_every_buffered_row_of_every_worker(project: Path) -> None:
    records = example_records(20)
    sent: dict[str, int] = {}
    with serving(project, 2, env=HOLD) as server:
        for i in range(60):
            size = 1 + i % 3
            request_id = f"e2e-{i}"
            headers = {"X-Request-Id": request_id}
            if size == 1:
                response = server.http.post("/predict", json=records[i % 20], headers=headers)
            else:
                batch = {"records": [records[(i + k) % 20] for k in range(size)]}
                response = server.http.post("/predict/batch", json=batch, headers=headers)
            assert response.status_code == 200, response.text
            assert response.json()["id"] == request_id
            sent[request_id] = size
        text = server.http.get("/metrics").text
        labels = {"model": NAME, "kind": PREDICTIONS}
        # Both workers' buffers, whichever answers the scrape.
        assert metric(text, "refit_prediction_log_buffered_rows", **labels) == sum(sent.values())
        assert metric(text, "refit_prediction_log_capacity_rows", **labels) == 2 * 20_000
        assert metric(text, "refit_prediction_log_written_rows_total", **labels) == 0
    with open_services(load_project(project)) as services:
        logs = list_logs(services.registry, NAME, PREDICTIONS)
        frame = read_logs(services.store, logs)
    assert sum(log.rows for log in logs) == sum(sent.values())
    rows = collections.Counter(frame[REQUEST_ID])
    assert rows == sent
    for request_id, group in frame.groupby(REQUEST_ID):
        assert sorted(group[ROW]) == list(range(sent[str(request_id)]))
    assert len({log.instance for log in logs}) == len(logs)  # a file per worker that answered


def test_a_running_server_writes_flush_seconds_after_the_first_row(project: Path) -> None:
    environment = {"REFIT_MONITOR__FLUSH_ROWS": "100000", "REFIT_MONITOR__FLUSH_SECONDS": "0.5"}
    with open_services(load_project(project)) as services:
        before = len(list_logs(services.registry, NAME, PREDICTIONS))
        with serving(project, 1, env=environment) as server:
            answer = server.http.post("/predict", json=example_records(1)[0])
            assert answer.status_code == 200
            request_id = answer.json()["id"]

            def written() -> bool:
                return len(list_logs(services.registry, NAME, PREDICTIONS)) > before

            wait_until("the log file of the request", written, 30.0)
            text = server.http.get("/metrics").text
            labels = {"model": NAME, "kind": PREDICTIONS}
            assert metric(text, "refit_prediction_log_files_total", **labels) == 1
            assert metric(text, "refit_prediction_log_written_rows_total", **labels) == 1
        [log] = list_logs(services.registry, NAME, PREDICTIONS)[before:]
        frame = read_logs(services.store, [log])
    assert frame[REQUEST_ID].tolist() == [request_id]
    assert log.version == 1


def test_a_server_with_logging_off_writes_no_log(project: Path) -> None:
    with open_services(load_project(project)) as services:
        before = len(list_logs(services.registry, NAME, PREDICTIONS))
        with serving(project, 1, env={"REFIT_MONITOR__LOG": "false"}) as server:
            for record in example_records(5):
                assert server.http.post("/predict", json=record).status_code == 200
        assert len(list_logs(services.registry, NAME, PREDICTIONS)) == before
