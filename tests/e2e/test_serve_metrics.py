"""`/metrics` of `refit serve` is the server's, not one worker's: every scrape, whichever
worker answers it, gives the totals of all of them.

Which worker holds a connection shows in `/v1/models` (each worker loads the model itself, so
its `loaded_at` is its own); a request and a scrape sent on that same keep-alive connection
reach that worker.
"""

from __future__ import annotations

import collections
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from serving import NAME, START_WITHIN, Server, example_records, make_project, serving

pytestmark = pytest.mark.slow

EACH = 6  # requests, and scrapes, that each worker must answer


def worker_of(http: httpx.Client) -> str:
    served = http.get("/v1/models").json()["models"][0]["served"]
    assert served is not None
    loaded_at: str = served["loaded_at"]
    return loaded_at


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def until_each_worker(server: Server, workers: int, count: int, path: str) -> list[str]:
    """Send `path` (a prediction, or a scrape) on new connections until each worker answered
    it `count` times; the bodies of the answers, in order."""
    record = example_records(1)[0]
    seen: collections.Counter[str] = collections.Counter()
    bodies: list[str] = []
    for _ in range(100 * count * workers):
        with httpx.Client(base_url=server.url, trust_env=False, timeout=10.0) as http:
            worker = worker_of(http)
            if seen[worker] >= count:
                continue
            response = http.post(path, json=record) if path == "/predict" else http.get(path)
            assert response.status_code == 200, response.text
            seen[worker] += 1
            bodies.append(response.text)
        if len(seen) == workers and min(seen.values()) >= count:
            return bodies
    pytest.fail(f"not every worker answered {path} {count} times: {dict(seen)}")


@pytest.mark.parametrize("workers", [1, 2])
def test_every_scrape_counts_the_requests_of_every_worker(tmp_path: Path, workers: int) -> None:
    root = make_project(tmp_path / "p")
    with serving(root, workers=workers) as server:
        server.converge(1, workers=workers, within=START_WITHIN)
        sent = len(until_each_worker(server, workers, EACH, "/predict"))
        scrapes = until_each_worker(server, workers, EACH, "/metrics")
    assert sent == workers * EACH
    predicted = (("route", "/predict"), ("status", "200"))
    totals = []
    for text in scrapes:
        assert "_created" not in text
        found = samples(text)
        totals.append(found[("refit_requests_total", predicted)])
        assert found[("refit_predicted_rows_total", (("model", NAME),))] == sent
        assert found[("refit_model_version", (("model", NAME),))] == 1
        assert found[("refit_model_refused_version", (("model", NAME),))] == 0
        count = found[("refit_request_duration_seconds_count", (("route", "/predict"),))]
        assert count == sent
    print(f"\n{sent} predictions over {workers} worker(s); scraped totals: {totals}")
    assert totals == [sent] * len(scrapes)
