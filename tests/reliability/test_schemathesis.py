"""Schemathesis against a real `refit serve`: every operation of its served OpenAPI document,
fuzzed with valid and invalid requests, gets no server error and no answer the document does
not allow (status, content type, headers, body schema), refuses what the document forbids and
takes what it allows.

The run is deterministic (a fixed seed, no example database) and bounded (at most
`MAX_EXAMPLES` generated cases per operation and phase), with the stateless phases: examples,
coverage, fuzzing. Checks that cannot hold by the nature of a protocol are turned off for
those operations alone, each for the reason given in `CONFIG`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from serving import make_project, serving

pytestmark = pytest.mark.slow

MAX_EXAMPLES = 50
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")

CONFIG = """
# MLflow's and SageMaker's /ping and /health answer a newline as application/json, as MLflow's
# own server does; the document says so (a string "\\n", not JSON), which JSON Schema cannot
# check on a body that does not parse.
[[operations]]
include-path = ["/ping", "/health"]
checks.response_schema_conformance.enabled = false

# An Open Inference request or an /invocations table must also fit the served signature (the
# tensor's shape, the number of features, a CSV header of its names), which JSON Schema cannot
# state: a schema-valid body may be rightly refused with 400.
[[operations]]
include-path-regex = "^/(invocations|v2/models/\\\\{name\\\\}(/versions/\\\\{version\\\\})?/infer)$"
checks.positive_data_acceptance.enabled = false
"""


def test_schemathesis_finds_no_server_error_and_no_undocumented_answer(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p")
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    report = tmp_path / "report.json"
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    command = [
        str(SCHEMATHESIS),
        "--no-color",
        "--config-file",
        str(config),
        "run",  # with every check: each is on unless CONFIG turns it off (a --checks would win)
        "--phases",
        "examples,coverage,fuzzing",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        "0",
        "--generation-deterministic",  # and no example database
        "--workers",
        "1",
        "--request-timeout",
        "10",
        "--report",
        "json",
        "--report-json-path",
        str(report),
    ]
    with serving(root, workers=1) as server:
        server.converge(1, workers=1)
        run = subprocess.run(
            [*command, f"{server.url}/openapi.json"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
        )
    output = run.stdout[-8000:] + run.stderr[-2000:]
    assert report.exists(), f"schemathesis wrote no report (exit {run.returncode}):\n{output}"
    result = json.loads(report.read_text())
    operations, cases = result["operations"], result["test_cases"]
    failures = {f["code"]: f["count"] for f in result["failures"]}
    print(
        f"\nschemathesis {result['schemathesis_version']}: {operations['tested']} operations, "
        f"{cases['generated']} requests in {result['running_time']:.0f} s; "
        f"{cases['with_failures']} with failures {failures}, {len(result['errors'])} errors"
    )
    assert operations["tested"] == operations["selected"] == operations["total"], operations
    assert operations["tested"] >= 30, operations
    assert cases["generated"] >= 10 * operations["tested"], cases
    assert result["failures"] == [], output
    assert result["errors"] == [], output
    assert run.returncode == 0, output
