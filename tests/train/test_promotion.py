"""Moving production by hand: promote a chosen version, roll back to the one before."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from refit.data.ingest import run_ingest
from refit.errors import ConflictError, NotFoundError
from refit.examples import create_project, drop_batch
from refit.project import load_project
from refit.registry import PRODUCTION, DecisionRow
from refit.services import Services, open_services
from refit.train.promotion import UnservableVersionError, promote_version, rollback
from refit.train.run import run_training

NAME = "diabetes"
STRICT_GATE = {"REFIT_GATE__MIN_IMPROVEMENT": "1000"}
"""No challenger beats production by 1000 rmse: only the first version is promoted."""


def train_on_new_snapshot(root: Path, environ: dict[str, str]) -> None:
    with open_services(load_project(root, environ)) as services:
        ingested = run_ingest(services.project, services.registry, services.store)
        assert ingested.status == "accepted", ingested.message
        run_training(services)


@pytest.fixture(scope="module")
def three_versions_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A diabetes project with v1, v2, v3 trained on growing snapshots; production is v1."""
    root = create_project(tmp_path_factory.mktemp("template") / "p", NAME)
    train_on_new_snapshot(root, STRICT_GATE)
    for number in (2, 3):
        drop_batch(root, NAME, number, 3)
        train_on_new_snapshot(root, STRICT_GATE)
    return root


@pytest.fixture
def services(three_versions_template: Path, tmp_path: Path) -> Iterator[Services]:
    """The open services of a fresh copy of the three-version project."""
    root = tmp_path / "p"
    shutil.copytree(three_versions_template, root)
    with open_services(load_project(root)) as opened:
        assert opened.registry.alias_version(NAME) == 1
        values = {opened.registry.get_version(NAME, v).metrics["rmse"] for v in (1, 2, 3)}
        assert len(values) == 3, "the versions must be told apart by their metric"
        yield opened


def rmse(services: Services, version: int) -> float:
    value: float = services.registry.get_version(NAME, version).metrics["rmse"]
    return value


def fields(decision: DecisionRow) -> tuple[object, ...]:
    return (
        decision.action,
        decision.promoted,
        decision.candidate_version,
        decision.previous_version,
        decision.metric,
        decision.candidate_value,
        decision.champion_value,
        decision.reason,
        decision.actor,
    )


def test_promoting_a_version_by_hand_moves_production_and_records_why(
    services: Services,
) -> None:
    decision = promote_version(services.registry, NAME, 3, "alice", store=services.store)
    production = services.registry.alias_version(NAME)
    stored = services.registry.list_decisions(NAME)[0]
    expected = ("promote", True, 3, 1, "rmse", rmse(services, 3), rmse(services, 1))
    assert production == 3
    assert fields(decision) == (*expected, "promoted by hand over v1", "alice")
    assert fields(stored) == fields(decision)


def test_promoting_the_version_in_production_is_a_conflict(services: Services) -> None:
    before = len(services.registry.list_decisions(NAME))
    with pytest.raises(ConflictError, match="v1 already holds production"):
        promote_version(services.registry, NAME, 1, "alice", store=services.store)
    assert services.registry.alias_version(NAME) == 1
    assert len(services.registry.list_decisions(NAME)) == before


def test_promoting_a_missing_version_is_not_found(services: Services) -> None:
    before = len(services.registry.list_decisions(NAME))
    with pytest.raises(NotFoundError, match="has no version 9"):
        promote_version(services.registry, NAME, 9, "alice", store=services.store)
    assert services.registry.alias_version(NAME) == 1
    assert len(services.registry.list_decisions(NAME)) == before


def test_rolling_back_twice_walks_back_two_promotions(services: Services) -> None:
    registry = services.registry
    promote_version(registry, NAME, 2, "alice", store=services.store)
    promote_version(registry, NAME, 3, "alice", store=services.store)

    first = rollback(registry, NAME, "bob", store=services.store)
    assert registry.alias_version(NAME) == 2
    second = rollback(registry, NAME, "bob", store=services.store)
    assert registry.alias_version(NAME) == 1
    # v1 was the first version promoted: there is nothing before it.
    with pytest.raises(NotFoundError, match="no earlier version"):
        rollback(registry, NAME, "bob", store=services.store)
    assert registry.alias_version(NAME) == 1
    values = {v: rmse(services, v) for v in (1, 2, 3)}
    stored = registry.list_decisions(NAME)[:2]

    assert fields(first) == (
        *("rollback", True, 2, 3, "rmse", values[2], values[3]),
        *("rolled back from v3 to v2", "bob"),
    )
    assert fields(second) == (
        *("rollback", True, 1, 2, "rmse", values[1], values[2]),
        *("rolled back from v2 to v1", "bob"),
    )
    assert [fields(d) for d in stored] == [fields(second), fields(first)]


def test_with_production_unset_rollback_is_not_found_and_promotion_is_over_nothing(
    tmp_path: Path,
) -> None:
    root = create_project(tmp_path / "p", NAME)
    train_on_new_snapshot(root, {"REFIT_GATE__MAX": "1"})  # rmse <= 1: never promoted
    with open_services(load_project(root)) as services:
        registry = services.registry
        assert registry.aliases(NAME) == {}
        with pytest.raises(NotFoundError, match="production is not set"):
            rollback(registry, NAME, "bob", store=services.store)

        decision = promote_version(registry, NAME, 1, "alice", store=services.store)
        assert registry.aliases(NAME) == {PRODUCTION: 1}
        value = rmse(services, 1)
    assert fields(decision) == (
        *("promote", True, 1, None, "rmse", value, None),
        *("promoted by hand over nothing", "alice"),
    )


def break_artifact(services: Services, version: int, what: str) -> None:
    """Damage one of `version`'s files in the store: its artifact or its ONNX file,
    "altered" (other bytes) or "missing"."""
    row = services.registry.get_version(NAME, version)
    damaged, _, how = what.partition(" ")
    onnx = row.onnx or {}
    key = onnx["uri"] if damaged == "onnx" else row.artifact_uri
    path = services.project.root / ".refit" / "artifacts" / key
    if how == "missing":
        path.unlink()
    else:
        path.write_bytes(path.read_bytes() + b"!")


@pytest.mark.parametrize(
    ("what", "said"),
    [
        ("artifact altered", "its artifact models/"),
        ("artifact missing", "is missing"),
        ("onnx altered", "its ONNX artifact models/"),
    ],
)
def test_a_version_whose_artifacts_are_damaged_is_refused_and_production_stays(
    services: Services, what: str, said: str
) -> None:
    version = 3
    if what.startswith("onnx"):
        onnx = services.registry.get_version(NAME, version).onnx or {}
        if onnx.get("status") != "ok":
            pytest.skip(f"v{version} has no ONNX file: {onnx.get('status')}")
    break_artifact(services, version, what)
    before = len(services.registry.list_decisions(NAME))
    with pytest.raises(UnservableVersionError, match=said) as refused:
        promote_version(services.registry, NAME, version, "alice", store=services.store)
    assert refused.value.exit_code == 6
    assert f"{NAME} v{version} cannot take production" in refused.value.message
    assert services.registry.alias_version(NAME) == 1
    assert len(services.registry.list_decisions(NAME)) == before


def test_a_rollback_to_a_damaged_version_is_refused(services: Services) -> None:
    promote_version(services.registry, NAME, 2, "alice", store=services.store)
    break_artifact(services, 1, "artifact altered")
    with pytest.raises(UnservableVersionError, match="v1 cannot take production"):
        rollback(services.registry, NAME, "bob", store=services.store)
    assert services.registry.alias_version(NAME) == 2


def test_the_gate_does_not_promote_a_version_whose_artifact_is_damaged(tmp_path: Path) -> None:
    root = create_project(tmp_path / "p", NAME)
    with open_services(load_project(root)) as services:
        assert run_ingest(services.project, services.registry, services.store).status == "accepted"
        real = services.store.get

        def damaged(uri: str, sha256: str) -> bytes:
            # Every model file read back finds other bytes than recorded.
            return real(uri, "0" * 64 if uri.startswith("models/") else sha256)

        services.store.get = damaged  # type: ignore[method-assign]
        result = run_training(services)
        assert not result.decision.promoted
        assert "but not promoted" in result.decision.reason
        assert "cannot take production" in result.decision.reason
        assert services.registry.aliases(NAME) == {}
