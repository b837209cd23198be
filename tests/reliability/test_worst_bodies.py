"""No request can freeze a worker: the worst body of each shape, at the size limit (10 MiB),
is answered (4xx) in well under 100 ms, and `/health/live` asked meanwhile is not held up.

Before the work over a body was bounded, the slowest of these took 2 to 12 s each in process
(a problem per row before the cap, a did-you-mean per long name, a Problem per unknown key).
"""

from __future__ import annotations

import json
import statistics
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from serving import Server, example_records, make_project, serving

pytestmark = pytest.mark.slow

LIMIT = 10 * 2**20
"""serve.max_body_bytes by default."""
TRIES = 3
WITHIN = 0.1
"""Seconds: the median answer of each worst body must take less (a path quadratic in the
body, or per value before the cap, takes seconds at this size), or, on a machine so busy that
merely reading 10 MiB takes longer, less than `FLOOR_TIMES` the time of reading one."""
FLOOR_TIMES = 3
PROBE_WITHIN = 1.0
"""Seconds: no `/health/live` asked while the worst bodies arrive may take longer (Kubernetes'
default probe timeout)."""

RECORD = example_records(1)[0]
NAMES = list(RECORD)
JSON = "application/json"


def fill(head: bytes, item: bytes, tail: bytes, separator: bytes = b",") -> bytes:
    """`head`, as many `item`s as fit in the size limit, `tail`."""
    count = (LIMIT - len(head) - len(tail)) // (len(item) + len(separator))
    return head + separator.join([item] * count) + tail


def unknown_keys(value: str = "1") -> str:
    """Distinct unknown fields, `"k0000001":1,...`, filling most of the size limit."""
    return ",".join(f'"k{i:07d}":{value}' for i in range(LIMIT // (12 + len(value))))


def worst_bodies() -> dict[str, tuple[str, str, bytes, int]]:
    """What each shape can do worst: (path, content type, body, the status it must get)."""
    v2 = "/v2/models/breast-cancer/infer"
    csv_header = ",".join(NAMES).encode() + b"\n"
    wide = [f"c{i}" for i in range(40_000)]
    return {
        "record of 800k unknown fields": (
            "/predict",
            JSON,
            f"{{{unknown_keys()[:-40]}}}".encode(),
            413,
        ),
        "record of one field 550k times": (
            "/predict",
            JSON,
            fill(b"{", json.dumps(NAMES[0]).encode() + b":1", b"}"),
            413,
        ),
        "record of 50 names of 200 KB": (
            "/predict",
            JSON,
            json.dumps({"x" * 200_000 + str(i): 1 for i in range(50)}).encode(),
            422,
        ),
        "record of a 10 MiB string": (
            "/predict",
            JSON,
            json.dumps({**RECORD, NAMES[0]: "x" * (LIMIT - 2000)}).encode(),
            422,
        ),
        "10 MiB of nesting": ("/predict", JSON, b"[" * (LIMIT // 2) + b"]" * (LIMIT // 2), 400),
        "batch of 3.5M empty records": (
            "/predict/batch",
            JSON,
            fill(b'{"records":[', b"{}", b"]}"),
            413,
        ),
        "batch beside 800k unknown fields": (
            "/predict/batch",
            JSON,
            f'{{"records":[],{unknown_keys()[:-40]}}}'.encode(),
            413,
        ),
        "batch of 10k records of unknown fields": (
            "/predict/batch",
            JSON,
            json.dumps({"records": [{f"u{j}": 1 for j in range(30)}] * 10_000}).encode(),
            422,
        ),
        "V2 of 190k inputs": (
            v2,
            JSON,
            fill(b'{"inputs":[', b'{"name":"a","shape":[1],"datatype":"FP64","data":[1]}', b"]}"),
            413,
        ),
        "V2 shape of rank 5M": (
            v2,
            JSON,
            fill(b'{"inputs":[{"name":"a","datatype":"FP64","data":[1],"shape":[', b"1", b"]}]}"),
            413,
        ),
        "V2 tensor of 5M values": (
            v2,
            JSON,
            fill(
                b'{"inputs":[{"name":"a","datatype":"FP64","shape":[1,30],"data":[', b"0", b"]}]}"
            ),
            413,
        ),
        "split of 40k columns": (
            "/invocations",
            JSON,
            json.dumps(
                {"dataframe_split": {"columns": wide, "data": [[1] * 40_000] * 20}}
            ).encode(),
            413,
        ),
        "split of 5M one-value rows": (
            "/invocations",
            JSON,
            fill(b'{"dataframe_split":{"columns":["a"],"data":[', b"1", b"]}}"),
            413,
        ),
        "instances of 3M rows": ("/invocations", JSON, fill(b'{"instances":[', b"[1]", b"]}"), 413),
        "inputs of 800k columns": (
            "/invocations",
            JSON,
            f'{{"inputs":{{{unknown_keys("[1]")[:-40]}}}}}'.encode(),
            413,
        ),
        "CSV header of 40k names": (
            "/invocations",
            "text/csv",
            (",".join(wide) + "\n" + ",".join(["1"] * 40_000) + "\n").encode(),
            400,
        ),
        "CSV of 10 MiB of blank lines": (
            "/invocations",
            "text/csv",
            csv_header + b"\n" * (LIMIT - 1000),
            413,
        ),
        "CSV of 5M one-cell rows": (
            "/invocations",
            "text/csv",
            csv_header + b"1\n" * ((LIMIT - 1000) // 2),
            413,
        ),
    }


class Prober(threading.Thread):
    """Asks `/health/live` on its own connection every few milliseconds until stopped."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.times: list[float] = []
        self.failures: list[str] = []
        self.done = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.url, trust_env=False, timeout=5.0) as http:
            while not self.done.is_set():
                start = time.perf_counter()
                response = http.get("/health/live")
                self.times.append(time.perf_counter() - start)
                if response.status_code != 200:
                    self.failures.append(f"{response.status_code}: {response.text}")
                time.sleep(0.005)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    project = make_project(tmp_path_factory.mktemp("worst") / "project")
    with serving(project, workers=1) as running:
        running.converge(1, workers=1)
        yield running


def test_the_worst_body_of_each_shape_is_answered_at_once(server: Server) -> None:
    bodies = worst_bodies()
    plain = json.dumps("x" * (LIMIT - 100)).encode()  # read, parsed and refused in one pass
    prober = Prober(server.url)
    prober.start()
    figures, slow = [], []
    with httpx.Client(base_url=server.url, trust_env=False, timeout=30.0) as http:

        def answer(path: str, content_type: str, body: bytes, status: int, label: str) -> float:
            start = time.perf_counter()
            response = http.post(path, content=body, headers={"content-type": content_type})
            took = time.perf_counter() - start
            assert response.status_code == status, f"{label}: {response.text[:300]}"
            size = len(response.content)
            assert size < 64 * 1024, f"{label}: an answer of {size} bytes"
            return took

        answer("/predict", JSON, plain, 422, "warm-up")
        for label, (path, content_type, body, status) in bodies.items():
            assert len(body) <= LIMIT, label
            times, reading = [], []
            for _ in range(TRIES):  # interleaved with a body that costs only its reading
                times.append(answer(path, content_type, body, status, label))
                reading.append(answer("/predict", JSON, plain, 422, "10 MiB string"))
            median, floor = statistics.median(times), statistics.median(reading)
            figures.append(
                f"{label:40s} {len(body) / 2**20:5.1f} MiB  {status}  {median * 1000:6.1f} ms "
                f"(a 10 MiB string: {floor * 1000:5.1f} ms)"
            )
            if median >= max(WITHIN, FLOOR_TIMES * floor):
                slow.append(label)
    prober.done.set()
    prober.join(10)
    probes = sorted(prober.times)
    p99 = probes[int(0.99 * (len(probes) - 1))]
    print("\n".join(["", *figures]))
    print(
        f"/health/live meanwhile: {len(probes)} probes, median "
        f"{statistics.median(probes) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, "
        f"max {probes[-1] * 1000:.1f} ms"
    )
    assert not slow, f"answered in {WITHIN * 1000:.0f} ms or more: {slow}"
    assert not prober.failures, prober.failures[:3]
    assert probes[-1] < PROBE_WITHIN, f"a /health/live took {probes[-1] * 1000:.0f} ms"
