"""The registry on both backends: SQLite (a file) and a real PostgreSQL server."""

from __future__ import annotations

import multiprocessing
import threading
import uuid
from pathlib import Path

import pytest
from sqlalchemy import inspect

from refit.errors import ConflictError, NotFoundError, StoreError
from refit.registry import (
    PRODUCTION,
    DecisionRow,
    IngestBatchRow,
    ModelVersionRow,
    Registry,
    SnapshotRow,
    open_registry,
)
from refit.registry.jobs import interrupt_dead_runs, interrupt_orphaned_runs


def snapshot(tag: str = "a") -> SnapshotRow:
    sid = (tag * 64)[:64]
    return SnapshotRow(
        id=sid,
        project="demo",
        uri=f"snapshots/{sid[:2]}/{sid}.parquet",
        sha256="f" * 64,
        size_bytes=100,
        row_count=10,
        mode="cumulative",
        parent_id=None,
        columns={"x": "float"},
        stats={"x": {"count": 10}},
    )


def batch(status: str = "accepted", snapshot_id: str | None = None) -> IngestBatchRow:
    return IngestBatchRow(
        project="demo",
        status=status,
        description="1 new file",
        rows_read=10,
        rows_valid=10,
        rows_rejected=0,
        rejects_uri=None,
        rejects_sha256=None,
        snapshot_id=snapshot_id,
        reason=None,
    )


def version_row(snapshot_id: str) -> ModelVersionRow:
    return ModelVersionRow(
        name="demo",
        task="classification",
        flavor="sklearn",
        format="joblib",
        artifact_uri="models/ab/ab.joblib",
        artifact_sha256="a" * 64,
        artifact_size=1,
        signature={},
        params={},
        metric="roc_auc",
        metrics={"roc_auc": 0.9},
        snapshot_id=snapshot_id,
        code_revision=None,
        timings={},
    )


def train_version(registry: Registry, snapshot_id: str) -> int:
    run_id = uuid.uuid4().hex
    registry.start_run(run_id, "demo", snapshot_id, "manual")
    return registry.register_version(run_id, version_row(snapshot_id)).version


def decision(candidate: int, action: str = "gate") -> DecisionRow:
    return DecisionRow(
        name="demo",
        action=action,
        alias=PRODUCTION,
        promoted=False,
        candidate_version=candidate,
        reason="test",
        actor="tests",
    )


def registry_with_snapshot(registry: Registry) -> str:
    snap = snapshot()
    registry.record_batch(batch(snapshot_id=snap.id), {"file:a.csv": "1"}, snap)
    return snap.id


def test_migrations_create_every_table(registry: Registry) -> None:
    tables = set(inspect(registry.engine).get_table_names())
    assert {
        "snapshots",
        "ingest_batches",
        "source_marks",
        "training_runs",
        "model_versions",
        "aliases",
        "decisions",
        "alembic_version",
    } <= tables


def _open_and_close(url: str) -> None:
    open_registry(url).close()


def test_many_processes_may_migrate_at_once(registry_url: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_open_and_close, args=(registry_url,)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    registry = open_registry(registry_url)
    assert registry.aliases("demo") == {}
    registry.close()


def test_unreachable_database_is_a_clear_store_error(tmp_path: Path) -> None:
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(StoreError, match="cannot open the registry"):
        open_registry(f"sqlite:///{tmp_path / 'dir.db'}")
    with pytest.raises(StoreError, match="not a database URL"):
        open_registry("no such url")


def test_batches_record_snapshots_and_marks_together(registry: Registry) -> None:
    assert registry.latest_snapshot("demo") is None
    sid = registry_with_snapshot(registry)
    assert registry.source_marks("demo") == {"file:a.csv": "1"}
    latest = registry.latest_snapshot("demo")
    assert latest is not None and latest.id == sid
    assert latest.created_at.tzinfo is not None
    # The same content again is recorded as a batch but makes no second snapshot.
    registry.record_batch(batch("unchanged", sid), {"file:b.csv": "2"}, snapshot())
    assert len(registry.list_snapshots("demo")) == 1
    assert registry.source_marks("demo") == {"file:a.csv": "1", "file:b.csv": "2"}
    assert [b.status for b in registry.list_batches("demo")] == ["unchanged", "accepted"]


def test_snapshots_are_found_by_unique_prefix(registry: Registry) -> None:
    sid = registry_with_snapshot(registry)
    assert registry.get_snapshot(sid[:8]).id == sid
    with pytest.raises(NotFoundError, match="no snapshot"):
        registry.get_snapshot("bbbbbbbb")
    with pytest.raises(NotFoundError):
        registry.get_snapshot("aa")  # too short to be a useful prefix


def test_versions_number_up_and_mark_their_run(registry: Registry) -> None:
    sid = registry_with_snapshot(registry)
    assert [train_version(registry, sid) for _ in range(3)] == [1, 2, 3]
    runs = registry.list_runs("demo")
    assert {r.status for r in runs} == {"succeeded"}
    assert sorted(r.version or 0 for r in runs) == [1, 2, 3]
    assert [v.version for v in registry.list_versions("demo")] == [3, 2, 1]
    with pytest.raises(NotFoundError, match="no version 9"):
        registry.get_version("demo", 9)


def test_concurrent_trainers_get_distinct_version_numbers(registry: Registry) -> None:
    sid = registry_with_snapshot(registry)
    numbers: list[int] = []
    lock = threading.Lock()

    def train() -> None:
        v = train_version(registry, sid)
        with lock:
            numbers.append(v)

    threads = [threading.Thread(target=train) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(numbers) == [1, 2, 3, 4, 5, 6]


def test_failed_runs_are_kept_with_their_error(registry: Registry) -> None:
    sid = registry_with_snapshot(registry)
    registry.start_run("r1", "demo", sid, "manual")
    registry.end_run("r1", "failed", "ValueError: bad", {"fit_s": 0.1})
    (run,) = registry.list_runs("demo")
    assert (run.status, run.error, run.version) == ("failed", "ValueError: bad", None)
    assert registry.list_versions("demo") == []


def test_runs_of_dead_processes_are_marked_interrupted(registry: Registry) -> None:
    sid = registry_with_snapshot(registry)
    registry.start_run("mine", "demo", sid, "manual")
    registry.start_run("dead", "demo", sid, "manual")
    with registry.write() as s:
        from refit.registry import TrainingRunRow

        s.get_one(TrainingRunRow, "dead").pid = 2**22 + 12345  # above Linux's pid_max
    assert interrupt_dead_runs(registry, "demo") == 1
    status = {r.id: r.status for r in registry.list_runs("demo")}
    assert status == {"mine": "running", "dead": "interrupted"}


def test_scheduled_runs_left_running_are_interrupted_whatever_their_host(
    registry: Registry,
) -> None:
    sid = registry_with_snapshot(registry)
    registry.start_run("scheduled", "demo", sid, "schedule")
    registry.start_run("by-hand", "demo", sid, "manual")
    with registry.write() as s:
        from refit.registry import TrainingRunRow

        s.get_one(TrainingRunRow, "scheduled").host = "another-host"
    assert interrupt_orphaned_runs(registry, "demo", "schedule") == 1
    runs = {r.id: (r.status, r.error) for r in registry.list_runs("demo")}
    assert runs["by-hand"] == ("running", None)
    assert runs["scheduled"][0] == "interrupted" and "train lease" in str(runs["scheduled"][1])


def test_first_promotion_then_compare_and_set(registry: Registry) -> None:
    sid = registry_with_snapshot(registry)
    v1, v2, v3 = (train_version(registry, sid) for _ in range(3))
    d = registry.move_alias(decision(v1), expected=None)
    assert (d.promoted, d.previous_version) == (True, None)
    assert registry.alias_version("demo") == v1
    registry.move_alias(decision(v2), expected=v1)
    # A trainer that still believes production is v1 loses, and nothing changes.
    with pytest.raises(ConflictError, match="moved from v1 to v2"):
        registry.move_alias(decision(v3), expected=v1)
    with pytest.raises(ConflictError, match="moved from unset to v2"):
        registry.move_alias(decision(v3), expected=None)
    assert registry.alias_version("demo") == v2
    assert [d.candidate_version for d in registry.list_decisions("demo")] == [v2, v1]


def test_promoting_a_missing_version_is_not_found(registry: Registry) -> None:
    with pytest.raises(NotFoundError, match="no version 7"):
        registry.move_alias(decision(7), expected=None)


def test_racing_promotions_have_exactly_one_winner(registry: Registry) -> None:
    sid = registry_with_snapshot(registry)
    v1 = train_version(registry, sid)
    registry.move_alias(decision(v1), expected=None)
    challengers = [train_version(registry, sid) for _ in range(6)]
    outcomes: list[str] = []
    barrier = threading.Barrier(len(challengers))

    def promote(v: int) -> None:
        barrier.wait()
        try:
            registry.move_alias(decision(v), expected=v1)
            outcomes.append("won")
        except ConflictError:
            outcomes.append("conflict")

    threads = [threading.Thread(target=promote, args=(v,)) for v in challengers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["conflict"] * 5 + ["won"]
    assert registry.alias_version("demo") in challengers
    assert sum(d.promoted for d in registry.list_decisions("demo")) == 2


def test_rollback_walks_back_through_promotions(registry: Registry) -> None:
    sid = registry_with_snapshot(registry)
    v1, v2, v3 = (train_version(registry, sid) for _ in range(3))
    with pytest.raises(NotFoundError, match="nothing to roll back"):
        registry.rollback_target("demo")
    registry.move_alias(decision(v1), expected=None)
    with pytest.raises(NotFoundError, match="no earlier version"):
        registry.rollback_target("demo")
    registry.move_alias(decision(v2), expected=v1)
    registry.move_alias(decision(v3), expected=v2)
    assert registry.rollback_target("demo") == (v3, v2)
    registry.move_alias(decision(v2, "rollback"), expected=v3)
    assert registry.rollback_target("demo") == (v2, v1)
