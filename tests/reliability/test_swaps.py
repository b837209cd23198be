"""A server follows `production` under load with no failed request, and stays flat in memory.

`refit serve` runs as a real process on 127.0.0.1; the tests move `production` from the test
process (promotions and a rollback) while client threads predict without pause, each on its own
keep-alive connection, and check every answer against what the version it names must answer
for those very records. `pytest -m soak` runs the longer variant: many more promotions under
load that lasts minutes.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from refit.project import load_project
from refit.serve.predictor import load_predictor
from refit.services import Services, open_services
from refit.train.promotion import promote_version, rollback
from servers import isolated_environment
from serving import (
    NAME,
    START_WITHIN,
    Server,
    Traffic,
    check_answer,
    example_records,
    expected_answers,
    make_project,
    register_copies,
    retrain,
    serving,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def records() -> list[dict[str, Any]]:
    """Twenty input records of the example."""
    return example_records(20)


@dataclass(frozen=True)
class Move:
    """`production` moved to `version` at `moved`; every worker served it at `converged`."""

    version: int
    moved: float
    converged: float


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`refit serve --workers 2`, shared by the tests that move production under it, on a
    project with four versions: v1 and v2 trained on more rows, v3 and v4 copies of v1."""
    root = tmp_path_factory.mktemp("two-workers") / "p"
    # Module scope runs before the autouse fixture that hides the developer's environment.
    with pytest.MonkeyPatch.context() as env:
        remove, put = isolated_environment(os.environ)
        for name in remove:
            env.delenv(name)
        for name, value in put.items():
            env.setenv(name, value)
        make_project(root)
        with open_services(load_project(root)) as services:
            retrain(services, root, 2)
            register_copies(services, of=1, count=2)
            first = services.registry.alias_version(NAME)  # v1, or v2 if the gate took it
    assert first is not None
    with serving(root, workers=2) as server:
        # Live means one worker answers; the other may still be importing scikit-learn.
        server.converge(first, workers=2, within=START_WITHIN)
        yield server


def follow_under_load(
    server: Server,
    workers: int,
    records: list[dict[str, Any]],
    steps: list[tuple[int, bool]],
    *,
    answers_per_step: int = 2,
    limit: float = 120.0,
    max_requests: int = 20_000,
) -> None:
    """Move production through `steps` (a version, and whether a rollback brings it back) under
    load, and check that no request failed and that, once every worker served a version, no
    request sent later got another one until production moved again."""
    with open_services(load_project(server.project)) as services:
        first = services.registry.alias_version(NAME)
        assert first is not None
        versions = {first, *(version for version, _ in steps)}
        expected = expected_answers(services, sorted(versions), records)
        server.converge(first, workers=workers)
        moves = [Move(first, 0.0, time.monotonic())]
        with Traffic(
            server.url, records, expected, limit=limit, max_requests=max_requests
        ) as traffic:
            traffic.wait_each(answers_per_step, sent_after=moves[0].converged)
            for version, back in steps:
                moved = time.monotonic()
                if back:
                    decision = rollback(services.registry, NAME, "test", store=services.store)
                    assert decision.candidate_version == version
                else:
                    promote_version(services.registry, NAME, version, "test", store=services.store)
                server.converge(version, workers=workers)
                moves.append(Move(version, moved, time.monotonic()))
                # Every keep-alive connection, whichever worker holds it, sees it too.
                traffic.wait_each(answers_per_step, sent_after=moves[-1].converged)
        answers = traffic.all()

    failed = [a for a in answers if a.problem is not None]
    took = [m.converged - m.moved for m in moves[1:]]
    print(
        f"\n{len(answers)} requests over {len(steps)} moves of production, {len(failed)} failed;"
        f" every worker served the new version within {min(took):.2f}-{max(took):.2f} s"
    )
    assert not failed, f"{len(failed)} of {len(answers)} requests failed: {failed[:5]}"
    assert {a.version for a in answers} <= versions
    # Before every worker served a version, in-flight requests may finish on the previous one.
    ends = [m.moved for m in moves[1:]] + [math.inf]
    for move, end in zip(moves, ends, strict=True):
        settled = [a for a in answers if a.sent > move.converged and a.received < end]
        stale = [a for a in settled if a.version != move.version]
        assert len(settled) >= answers_per_step * len(traffic.answers), move
        assert not stale, f"after every worker served v{move.version}: {stale[:5]}"
    assert [m.version for m in moves] == [first, *(version for version, _ in steps)]


def test_promotions_and_a_rollback_under_load_fail_no_request(
    two_workers: Server, records: list[dict[str, Any]]
) -> None:
    with open_services(load_project(two_workers.project)) as services:
        first = services.registry.alias_version(NAME)
        plan = [v.version for v in services.registry.list_versions(NAME) if v.version != first]
    assert len(plan) == 3
    follow_under_load(two_workers, 2, records, [*((v, False) for v in plan), (plan[-2], True)])


def test_every_worker_follows_a_promotion(
    two_workers: Server, records: list[dict[str, Any]]
) -> None:
    server = two_workers
    with open_services(load_project(server.project)) as services:
        first = services.registry.alias_version(NAME)
        assert first is not None
        version = max(
            v.version for v in services.registry.list_versions(NAME) if v.version != first
        )
        expected = expected_answers(services, [version], records)
        server.converge(first, workers=2)
        promote_version(services.registry, NAME, version, "test", store=services.store)
        took = server.converge(version, workers=2)
        runtime = (server.served() or {}).get("runtime")
        print(f"\nboth workers served v{version} ({runtime}) {took:.2f} s after its promotion")
        for _ in range(20):  # each on a new connection
            predicted = server.http.post("/predict", json=records[0])
            ready = server.http.get("/health/ready")
            metrics = server.http.get("/metrics").text
            assert check_answer(predicted, expected, [0], batch=False) == version
            assert ready.json() == {"status": "ready", "model": NAME, "version": version}
            assert f'refit_model_version{{model="{NAME}"}} {version}.0' in metrics


# Trees big enough (several MB in memory) that keeping one model per swap would show.
BIG_MODEL = {
    "estimator": "sklearn.ensemble.ExtraTreesClassifier",
    "params": {"n_estimators": 500, "random_state": 0},
}
SWAPS = 20


def loaded_size_mb(services: Services, version: int, copies: int = 6) -> float:
    """Memory one more loaded copy of `version` takes in this process."""

    def rss() -> float:
        status = Path("/proc/self/status").read_text()
        return int(next(x.split()[1] for x in status.splitlines() if x.startswith("VmRSS:"))) / 1024

    row = services.registry.get_version(NAME, version)
    # The first copies take imports, caches and memory freed by the training run.
    warm = [load_predictor(row, services.store) for _ in range(2)]
    before = rss()
    loaded = [load_predictor(row, services.store) for _ in range(copies)]
    size = (rss() - before) / len(loaded)
    del warm, loaded
    return size


def test_memory_stays_flat_over_twenty_swaps(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p", model=BIG_MODEL)
    with open_services(load_project(root)) as services:
        model_mb = loaded_size_mb(services, 1)
        copies = register_copies(services, of=1, count=SWAPS)
        rss = []
        with serving(root, workers=1) as server:
            server.converge(1, workers=1)
            start = server.rss_mb()
            for version in copies:
                promote_version(services.registry, NAME, version, "test", store=services.store)
                server.converge(version, workers=1, streak=1)
                rss.append(server.rss_mb())
    growth = rss[-1] - rss[4]
    # A server that kept one model per swap would grow by 15 models from swap 5 to 20. The
    # allocator keeps some freed memory: measured +2 to +6 MB, and once +32 MB (3 models of
    # 10 MB) on a loaded machine, which then stayed flat. The bound sits between the two.
    bound = max(7 * model_mb, 10.0)
    shown = " ".join(f"{r:.0f}" for r in rss)
    print(
        f"\none model {model_mb:.1f} MB; server RSS {start:.0f} MB serving v1, then after each"
        f" swap: {shown} MB; growth from swap 5 to {SWAPS}: {growth:+.1f} MB (bound {bound:.0f})"
    )
    assert 15 * model_mb > 1.5 * bound, "the model is too small for the bound to see a leak"
    assert growth < bound, f"the server grew by {growth:.1f} MB over {SWAPS - 5} swaps"


SOAK_VERSIONS = 30
SOAK_ROUNDS = 3


@pytest.mark.soak
@pytest.mark.timeout(1800)
def test_ninety_promotions_and_rollbacks_under_minutes_of_load_fail_no_request(
    tmp_path: Path, records: list[dict[str, Any]]
) -> None:
    root = make_project(tmp_path / "p")
    with open_services(load_project(root)) as services:
        retrain(services, root, 2)
        copies = register_copies(services, of=1, count=SOAK_VERSIONS - 2)
        first = services.registry.alias_version(NAME)
    assert first is not None
    plan = [v for v in [1, 2, *copies] if v != first]
    steps: list[tuple[int, bool]] = []
    for _ in range(SOAK_ROUNDS):
        for version in plan:
            steps.append((version, False))
        steps.append((steps[-2][0], True))
        plan = [plan[-1], *plan[:-1]]  # the next round starts with a version not in production
    with serving(root, workers=2) as server:
        server.converge(first, workers=2, within=START_WITHIN)
        follow_under_load(
            server, 2, records, steps, answers_per_step=20, limit=1500.0, max_requests=10**6
        )
