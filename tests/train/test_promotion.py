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
from refit.train.promotion import promote_version, rollback
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
    decision = promote_version(services.registry, NAME, 3, "alice")
    production = services.registry.alias_version(NAME)
    stored = services.registry.list_decisions(NAME)[0]
    expected = ("promote", True, 3, 1, "rmse", rmse(services, 3), rmse(services, 1))
    assert production == 3
    assert fields(decision) == (*expected, "promoted by hand over v1", "alice")
    assert fields(stored) == fields(decision)


def test_promoting_the_version_in_production_is_a_conflict(services: Services) -> None:
    before = len(services.registry.list_decisions(NAME))
    with pytest.raises(ConflictError, match="v1 already holds production"):
        promote_version(services.registry, NAME, 1, "alice")
    assert services.registry.alias_version(NAME) == 1
    assert len(services.registry.list_decisions(NAME)) == before


def test_promoting_a_missing_version_is_not_found(services: Services) -> None:
    before = len(services.registry.list_decisions(NAME))
    with pytest.raises(NotFoundError, match="has no version 9"):
        promote_version(services.registry, NAME, 9, "alice")
    assert services.registry.alias_version(NAME) == 1
    assert len(services.registry.list_decisions(NAME)) == before


def test_rolling_back_twice_walks_back_two_promotions(services: Services) -> None:
    registry = services.registry
    promote_version(registry, NAME, 2, "alice")
    promote_version(registry, NAME, 3, "alice")

    first = rollback(registry, NAME, "bob")
    assert registry.alias_version(NAME) == 2
    second = rollback(registry, NAME, "bob")
    assert registry.alias_version(NAME) == 1
    # v1 was the first version promoted: there is nothing before it.
    with pytest.raises(NotFoundError, match="no earlier version"):
        rollback(registry, NAME, "bob")
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
            rollback(registry, NAME, "bob")

        decision = promote_version(registry, NAME, 1, "alice")
        assert registry.aliases(NAME) == {PRODUCTION: 1}
        value = rmse(services, 1)
    assert fields(decision) == (
        *("promote", True, 1, None, "rmse", value, None),
        *("promoted by hand over nothing", "alice"),
    )
