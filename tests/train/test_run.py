"""Training runs end to end on a real project: snapshot -> fit -> register -> gate -> promote."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from refit.data.ingest import run_ingest
from refit.errors import ConflictError, NotFoundError, SpecError, TrainingError
from refit.examples import create_project, drop_batch
from refit.flavors import load_model
from refit.parquet import read_snapshot
from refit.project import load_project
from refit.registry import PRODUCTION, DecisionRow, Registry, SnapshotRow, TrainingRunRow
from refit.services import Services, open_services
from refit.spec import SPEC_FILE, ArtifactFormat
from refit.train.evidence import paired
from refit.train.gate import decide
from refit.train.metrics import NAMES, score
from refit.train.pipeline import target_array
from refit.train.run import TrainResult, run_training
from refit.train.split import split

NAME = "breast-cancer"


def opened(root: Path) -> Services:
    """The project's services, opened with the environment as it is now."""
    return open_services(load_project(root))


def ingest(services: Services) -> SnapshotRow:
    result = run_ingest(services.project, services.registry, services.store)
    assert result.status == "accepted", result.message
    assert result.snapshot is not None
    return result.snapshot


def ingest_more(root: Path, example: str = NAME) -> SnapshotRow:
    """Drop the rest of the example's rows into the project and ingest them."""
    drop_batch(root, example, 2, 2)
    with opened(root) as services:
        return ingest(services)


def train(root: Path, **kwargs: Any) -> TrainResult:
    with opened(root) as services:
        return run_training(services, **kwargs)


def holdout(services: Services, snapshot: SnapshotRow) -> tuple[Any, Any]:
    """The holdout rows (features, target) a run on `snapshot` is judged on."""
    spec = services.project.spec
    parts = split(read_snapshot(services.store, snapshot), spec.data, spec.model)
    return parts.holdout[list(spec.data.features)], target_array(parts.holdout, spec.data)


def edit_model(root: Path, **fields: Any) -> None:
    """Rewrite the `model` section of the project's refit.yaml (None removes a field)."""
    spec = yaml.safe_load((root / SPEC_FILE).read_text("utf-8"))
    for key, value in fields.items():
        if value is None:
            spec["model"].pop(key, None)
        else:
            spec["model"][key] = value
    (root / SPEC_FILE).write_text(yaml.safe_dump(spec, sort_keys=False), "utf-8")


@pytest.fixture
def project_root(tmp_path: Path) -> Path:
    """A breast-cancer project whose first batch (341 rows) is ingested."""
    root = create_project(tmp_path / "p", NAME)
    with opened(root) as services:
        ingest(services)
    return root


@pytest.fixture
def fit_function(project_root: Path) -> Iterator[Callable[[str], None]]:
    """Writes a module with `fit(X, y, params)` into the project and makes it `model.function`."""
    names: list[str] = []

    def write(source: str) -> None:
        name = f"user_fit_{uuid.uuid4().hex[:8]}"
        (project_root / f"{name}.py").write_text(textwrap.dedent(source), "utf-8")
        names.append(name)
        edit_model(project_root, estimator=None, function=f"{name}:fit")

    yield write
    for name in names:
        sys.modules.pop(name, None)


# --- a successful run -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("example", "task", "bound"),
    [
        ("breast-cancer", "classification", "the floor 0.9"),
        ("diabetes", "regression", "the ceiling 80"),
    ],
)
def test_a_first_run_registers_version_1_and_promotes_it(
    tmp_path: Path, example: str, task: str, bound: str
) -> None:
    root = create_project(tmp_path / "p", example)
    steps: list[str] = []
    with opened(root) as services:
        snapshot = ingest(services)
        result = run_training(services, trigger="schedule", actor="tester", on_step=steps.append)
        spec, registry = services.project.spec, services.registry
        version = registry.get_version(spec.name, 1)
        runs = registry.list_runs(spec.name)
        decisions = registry.list_decisions(spec.name)
        aliases = registry.aliases(spec.name)
        model = load_model(
            services.store.get(version.artifact_uri, version.artifact_sha256),
            ArtifactFormat.JOBLIB,
        )
        X, y = holdout(services, snapshot)

    assert result.version.version == 1 and result.promoted
    metric = spec.model.metric_name
    assert version.metric == metric
    assert set(version.metrics) == set(NAMES[spec.model.task])
    assert version.metrics[metric] == pytest.approx(score(model, X, y, spec.model.task, metric))
    assert [c["name"] for c in version.signature["inputs"]] == list(spec.data.features)
    assert version.signature["output"]["task"] == spec.model.task.value
    for key, value in spec.model.params.items():
        assert version.params[key] == value
    assert (version.snapshot_id, version.run_id) == (snapshot.id, result.run_id)
    assert (version.status, version.format, version.task) == ("ready", "joblib", task)
    assert version.artifact_uri.endswith(".joblib")
    assert version.code_revision is None, "the project folder is not a git repository"
    assert {"load_s", "split_s", "fit_s", "evaluate_s", "save_s", "total_s"} <= set(version.timings)
    assert version.timings["holdout_rows"] == len(X)

    [run] = runs
    assert (run.id, run.status, run.trigger, run.version, run.error) == (
        result.run_id,
        "succeeded",
        "schedule",
        1,
        None,
    )
    assert run.finished_at is not None and run.snapshot_id == snapshot.id

    assert aliases == {PRODUCTION: 1}
    [decision] = decisions
    assert (decision.action, decision.promoted, decision.candidate_version) == ("gate", True, 1)
    assert (decision.previous_version, decision.champion_value) == (None, None)
    assert decision.candidate_value == pytest.approx(version.metrics[metric])
    assert decision.actor == "tester"
    assert bound in decision.reason and "no production version" in decision.reason

    assert steps[0].startswith(f"loading snapshot {snapshot.id[:12]}")
    assert steps[-1] == f"registered {spec.name} v1; running the gate"


def git(root: Path, *args: str) -> str:
    identity = ["-c", "user.name=refit", "-c", "user.email=refit@example.invalid"]
    done = subprocess.run(
        ["git", *identity, "-c", "commit.gpgsign=false", *args],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def test_code_revision_is_the_commit_of_a_git_project(project_root: Path) -> None:
    git(project_root, "init", "--quiet")
    git(project_root, "add", SPEC_FILE)
    git(project_root, "commit", "--quiet", "-m", "the spec")
    head = git(project_root, "rev-parse", "HEAD")
    assert len(head) == 40

    assert train(project_root).version.code_revision == head
    # A change to a tracked file is a local change: the revision says so.
    with (project_root / SPEC_FILE).open("a", encoding="utf-8") as f:
        f.write("# edited\n")
    assert train(project_root).version.code_revision == f"{head}-dirty"


# --- the gate against a champion --------------------------------------------------------------


def test_a_second_run_is_scored_against_production_on_its_own_holdout(
    project_root: Path,
) -> None:
    first = train(project_root)
    bigger = ingest_more(project_root)
    assert bigger.row_count == 569

    second = train(project_root)
    with opened(project_root) as services:
        spec, registry, store = services.project.spec, services.registry, services.store
        v1, v2 = registry.get_version(NAME, 1), registry.get_version(NAME, 2)
        X, y = holdout(services, bigger)
        champion = load_model(store.get(v1.artifact_uri, v1.artifact_sha256), ArtifactFormat.JOBLIB)
        challenger = load_model(
            store.get(v2.artifact_uri, v2.artifact_sha256), ArtifactFormat.JOBLIB
        )
        decisions = registry.list_decisions(NAME)
        production = registry.alias_version(NAME)

    assert (first.version.version, second.version.version) == (1, 2)
    assert v2.snapshot_id == bigger.id != v1.snapshot_id
    decision = second.decision
    assert (decision.candidate_version, decision.previous_version) == (2, 1)
    assert decision.candidate_value is not None and decision.champion_value is not None
    # Both models are judged on the same rows: the new snapshot's holdout.
    metric = spec.model.metric_name
    assert decision.candidate_value == pytest.approx(v2.metrics[metric])
    assert decision.champion_value == pytest.approx(score(champion, X, y, spec.model.task, metric))
    # ... and on each of those rows: the paired comparison, recorded with the decision.
    evidence = paired(spec.gate, metric, spec.model.higher_is_better, y, champion, challenger, X)
    assert evidence.comparison is not None and evidence.comparison.test == "delong"
    assert decision.evidence == evidence.to_dict()
    expected = decide(
        metric,
        spec.model.higher_is_better,
        spec.gate,
        decision.candidate_value,
        decision.champion_value,
        1,
        evidence.comparison,
    )
    assert (decision.promoted, decision.reason) == (expected.promote, expected.reason)
    assert production == (2 if expected.promote else 1)
    assert [d.candidate_version for d in decisions] == [2, 1]
    assert decisions[0].promoted == expected.promote


def test_min_improvement_keeps_production_when_the_challenger_is_not_better_enough(
    project_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    train(project_root)
    ingest_more(project_root)
    monkeypatch.setenv("REFIT_GATE__MIN_IMPROVEMENT", "1")

    result = train(project_root)
    with opened(project_root) as services:
        production = services.registry.alias_version(NAME)
        stored = services.registry.list_decisions(NAME)[0]

    decision = result.decision
    assert result.version.version == 2 and not result.promoted
    assert production == 1
    assert decision.candidate_value is not None and decision.champion_value is not None
    assert decision.candidate_value - decision.champion_value < 1
    assert "not clearly better by more than 1: kept production v1" in decision.reason
    assert decision.evidence is not None and decision.evidence["high"] < 1
    assert (stored.promoted, stored.reason, stored.previous_version) == (False, decision.reason, 1)


def test_a_floor_not_reached_registers_the_version_without_promoting_it(
    project_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REFIT_GATE__MIN", "0.9999")
    result = train(project_root)
    with opened(project_root) as services:
        versions = services.registry.list_versions(NAME)
        aliases = services.registry.aliases(NAME)
        [run] = services.registry.list_runs(NAME)

    assert [v.version for v in versions] == [1]
    assert run.status == "succeeded"
    assert aliases == {}
    assert not result.promoted
    assert result.decision.previous_version is None and result.decision.champion_value is None
    assert "is below the floor 0.9999" in result.decision.reason


def test_a_champion_whose_artifact_is_corrupt_does_not_block_the_challenger(
    project_root: Path,
) -> None:
    v1 = train(project_root).version
    (project_root / ".refit" / "artifacts" / v1.artifact_uri).write_bytes(b"not a model")
    ingest_more(project_root)

    result = train(project_root)
    with opened(project_root) as services:
        production = services.registry.alias_version(NAME)

    decision = result.decision
    assert result.version.version == 2
    # As documented on `gate`: an unscorable champion does not block; the reason says why.
    assert decision.promoted and production == 2
    assert (decision.previous_version, decision.champion_value) == (1, None)
    assert decision.candidate_value is not None
    assert "reaches the floor 0.9 and production has no score" in decision.reason
    assert "production v1 could not be scored on this holdout" in decision.reason
    assert "corrupt" in decision.reason
    assert "there is no production version" not in decision.reason


def test_skops_artifacts_load_back_and_score_the_champion(
    project_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REFIT_MODEL__FORMAT", "skops")
    monkeypatch.setenv("REFIT_GATE__PROMOTE_TIES", "true")
    first = train(project_root)
    second = train(project_root)  # the same snapshot: the champion is loaded from skops

    version = first.version
    assert version.format == "skops"
    assert version.artifact_uri.endswith(".skops")
    with opened(project_root) as services:
        data = services.store.get(version.artifact_uri, version.artifact_sha256)
        X, y = holdout(services, services.registry.get_snapshot(version.snapshot_id))
    model = load_model(data, ArtifactFormat.SKOPS)
    task = load_project(project_root).spec.model.task
    assert score(model, X, y, task, "roc_auc") == pytest.approx(version.metrics["roc_auc"])
    assert second.decision.champion_value == pytest.approx(version.metrics["roc_auc"])
    assert second.promoted, second.decision.reason  # a tie promotes with promote_ties


def test_retraining_on_the_same_data_ties_and_keeps_production(
    project_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REFIT_GATE__TEST", "none")  # the point rule's wording of a tie
    train(project_root)
    again = train(project_root)
    with opened(project_root) as services:
        production = services.registry.alias_version(NAME)
        versions = services.registry.list_versions(NAME)

    decision = again.decision
    assert [v.version for v in versions] == [2, 1]
    assert not again.promoted and production == 1
    assert decision.candidate_value == pytest.approx(decision.champion_value)
    champion = f"{decision.champion_value:.6g}"
    assert decision.reason.endswith(
        f"ties production v1 ({champion}): a tie keeps production (gate.promote_ties is false)"
    )


def test_with_promote_ties_a_retrain_on_the_same_data_is_promoted(
    project_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    train(project_root)
    monkeypatch.setenv("REFIT_GATE__PROMOTE_TIES", "true")
    again = train(project_root)
    with opened(project_root) as services:
        production = services.registry.alias_version(NAME)

    assert again.promoted and production == 2
    assert again.decision.reason.endswith("which is enough with gate.promote_ties")


# --- failures ---------------------------------------------------------------------------------


def test_a_user_function_that_raises_fails_the_run_and_changes_nothing(
    project_root: Path, fit_function: Callable[[str], None]
) -> None:
    train(project_root)
    fit_function(
        """
        def fit(X, y, params):
            raise RuntimeError("the data is haunted")
        """
    )
    with pytest.raises(TrainingError, match="the data is haunted"):
        train(project_root)

    with opened(project_root) as services:
        runs = services.registry.list_runs(NAME)
        versions = services.registry.list_versions(NAME)
        aliases = services.registry.aliases(NAME)
        decisions = services.registry.list_decisions(NAME)
    failed = next(run for run in runs if run.version is None)
    assert failed.status == "failed" and failed.finished_at is not None
    assert failed.error is not None and "RuntimeError: the data is haunted" in failed.error
    assert "fit_s" in failed.timings
    assert [v.version for v in versions] == [1]
    assert aliases == {PRODUCTION: 1}
    assert len(decisions) == 1


def test_a_user_function_returning_no_model_fails_the_run(
    project_root: Path, fit_function: Callable[[str], None]
) -> None:
    fit_function(
        """
        def fit(X, y, params):
            return {"weights": [1, 2, 3]}
        """
    )
    with pytest.raises(TrainingError, match="expected a fitted model with a predict method"):
        train(project_root)
    with opened(project_root) as services:
        [run] = services.registry.list_runs(NAME)
        assert services.registry.list_versions(NAME) == []
    assert run.status == "failed"
    assert run.error is not None and "builtins.dict" in run.error


def test_a_run_stopped_by_an_interrupt_is_recorded_as_interrupted(
    project_root: Path, fit_function: Callable[[str], None]
) -> None:
    fit_function(
        """
        def fit(X, y, params):
            raise KeyboardInterrupt
        """
    )
    with pytest.raises(KeyboardInterrupt):
        train(project_root)
    with opened(project_root) as services:
        [run] = services.registry.list_runs(NAME)
        assert services.registry.list_versions(NAME) == []
    assert run.status == "interrupted" and run.finished_at is not None


def test_a_bad_estimator_fails_before_any_run_is_recorded(
    project_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REFIT_MODEL__ESTIMATOR", "sklearn.ensemble.NoSuchForest")
    with pytest.raises(SpecError, match="NoSuchForest"):
        train(project_root)
    with opened(project_root) as services:
        assert services.registry.list_runs(NAME) == []
        assert services.registry.list_versions(NAME) == []


def test_training_without_a_snapshot_says_to_ingest(tmp_path: Path) -> None:
    root = create_project(tmp_path / "p", NAME)
    with pytest.raises(NotFoundError, match="run `refit ingest` first"):
        train(root)
    with opened(root) as services:
        assert services.registry.list_runs(NAME) == []


# --- model.function ---------------------------------------------------------------------------


def test_a_user_function_gets_features_and_target_and_its_model_is_stored(
    project_root: Path, fit_function: Callable[[str], None]
) -> None:
    fit_function(
        """
        from sklearn.tree import DecisionTreeClassifier

        def fit(X, y, params):
            model = DecisionTreeClassifier(max_depth=params["depth"], random_state=0)
            model.fit(X, y)
            model.seen_columns_ = list(X.columns)
            model.seen_target_ = (y.name, sorted(set(y)))
            model.seen_rows_ = len(X)
            return model
        """
    )
    edit_model(project_root, params={"depth": 3})
    result = train(project_root)

    with opened(project_root) as services:
        spec = services.project.spec
        version = result.version
        data = services.store.get(version.artifact_uri, version.artifact_sha256)
        snapshot = services.registry.get_snapshot(version.snapshot_id)
        X, y = holdout(services, snapshot)
    model = load_model(data, ArtifactFormat.JOBLIB)
    assert type(model).__name__ == "DecisionTreeClassifier" and model.max_depth == 3
    assert model.seen_columns_ == list(spec.data.features)
    assert model.seen_target_ == ("diagnosis", ["benign", "malignant"])
    assert model.seen_rows_ == snapshot.row_count - version.timings["holdout_rows"]
    assert version.params == {"depth": 3}
    assert set(version.metrics) == set(NAMES[spec.model.task])
    assert score(model, X, y, spec.model.task, "roc_auc") == pytest.approx(
        version.metrics["roc_auc"]
    )
    assert result.decision.candidate_value == pytest.approx(version.metrics["roc_auc"])


# --- runs left behind -------------------------------------------------------------------------


def test_a_run_left_running_by_a_dead_process_becomes_interrupted(project_root: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    with opened(project_root) as services:
        snapshot = services.registry.latest_snapshot(NAME)
        assert snapshot is not None
        services.registry.start_run("dead", NAME, snapshot.id, "schedule")
        services.registry.start_run("alive", NAME, snapshot.id, "schedule")
        with services.registry.write() as s:
            s.get_one(TrainingRunRow, "dead").pid = child.pid

    train(project_root)
    with opened(project_root) as services:
        runs = {run.id: run for run in services.registry.list_runs(NAME)}
    assert runs["dead"].status == "interrupted"
    assert runs["dead"].error == "the training process ended before the run finished"
    assert runs["dead"].finished_at is not None
    assert runs["alive"].status == "running", "this process is alive: its run is left alone"


# --- racing trainers --------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def race_root(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """An ingested breast-cancer project whose registry is SQLite or PostgreSQL, where ties
    promote (so that two trainers on the same snapshot both pass the gate)."""
    monkeypatch.setenv("REFIT_GATE__PROMOTE_TIES", "true")
    if request.param == "postgres":
        monkeypatch.setenv("REFIT_STORAGE__METADATA_URL", request.getfixturevalue("postgres_url"))
    root = create_project(tmp_path / "p", NAME)
    with opened(root) as services:
        ingest(services)
    return root


def race(root: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[TrainResult, ConflictError]:
    """Two trainers on the same snapshot, both reaching the compare-and-set on production
    having read the same version; returns the winner's result and the loser's error."""
    together = threading.Barrier(2, timeout=60)
    move_alias = Registry.move_alias

    def move_alias_together(self: Registry, decision: DecisionRow, expected: int | None) -> Any:
        together.wait()
        return move_alias(self, decision, expected)

    monkeypatch.setattr(Registry, "move_alias", move_alias_together)
    outcomes: dict[str, TrainResult | BaseException] = {}

    def trainer(actor: str) -> None:
        try:
            outcomes[actor] = train(root, actor=actor)
        except BaseException as exc:
            outcomes[actor] = exc

    threads = [threading.Thread(target=trainer, args=(f"trainer-{i}",)) for i in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    won = [o for o in outcomes.values() if isinstance(o, TrainResult)]
    lost = [o for o in outcomes.values() if not isinstance(o, TrainResult)]
    assert len(won) == 1 and len(lost) == 1, outcomes
    assert isinstance(lost[0], ConflictError), lost[0]
    return won[0], lost[0]


def test_of_two_trainers_racing_against_a_champion_one_promotes(
    race_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert train(race_root).promoted  # v1; the racers tie with it, so both pass the gate
    winner, conflict = race(race_root, monkeypatch)

    assert winner.promoted
    assert f"moved from v1 to v{winner.version.version}" in str(conflict)
    with opened(race_root) as services:
        production = services.registry.alias_version(NAME)
        versions = services.registry.list_versions(NAME)
        decisions = services.registry.list_decisions(NAME)
        runs = services.registry.list_runs(NAME)
    assert [v.version for v in versions] == [3, 2, 1]
    assert [run.status for run in runs] == ["succeeded"] * 3
    assert production == winner.version.version
    gated = {d.candidate_version: d for d in decisions}
    assert sorted(gated) == [1, 2, 3]
    loser = gated[5 - winner.version.version]
    assert gated[winner.version.version].promoted and not loser.promoted
    assert loser.previous_version == 1
    assert "moved" in loser.reason and "not promoted" in loser.reason
    for version in (2, 3):
        assert gated[version].candidate_value is not None
        assert gated[version].champion_value is not None


def test_of_two_trainers_racing_to_be_the_first_version_one_promotes(
    race_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    winner, conflict = race(race_root, monkeypatch)

    assert winner.promoted
    # The loser either saw the winner's alias row or collided with its insert (PostgreSQL).
    assert "moved from unset" in str(conflict) or "another process" in str(conflict)
    with opened(race_root) as services:
        production = services.registry.alias_version(NAME)
        decisions = services.registry.list_decisions(NAME)
    assert production == winner.version.version
    [loser] = [d for d in decisions if d.candidate_version != winner.version.version]
    assert not loser.promoted and loser.previous_version is None
    assert "not promoted" in loser.reason and loser.champion_value is None


# --- targets the task cannot learn ------------------------------------------------------------


def target_project(root: Path, task: str, label: Any) -> Path:
    """A project of one float feature `a` and the target `label`, ingested."""
    estimator = {"classification": "LogisticRegression", "regression": "Ridge"}[task]
    spec = {
        "name": "targets",
        "data": {
            "source": {"kind": "csv", "path": "incoming"},
            "target": "label",
            "features": {"a": "float"},
        },
        "model": {"task": task, "estimator": f"sklearn.linear_model.{estimator}"},
    }
    (root / "incoming").mkdir(parents=True)
    (root / SPEC_FILE).write_text(yaml.safe_dump(spec), "utf-8")
    a = np.linspace(0, 1, len(label))
    pd.DataFrame({"a": a, "label": label}).to_csv(root / "incoming" / "rows.csv", index=False)
    with opened(root) as services:
        ingest(services)
    return root


@pytest.mark.parametrize(
    ("task", "label", "message"),
    [
        (
            "regression",
            ["yes", "no"] * 30,
            "data.target 'label' holds text ('yes', 'no', ...), but model.task is regression, "
            "which predicts numbers: set model.task: classification, or give a numeric target",
        ),
        (
            "classification",
            np.arange(60) / 4,
            "data.target 'label' holds 60 distinct numbers, not all whole (0.25, 0.5, 0.75, "
            "...), but model.task is classification, which learns one class per value (at most "
            "1,000): set model.task: regression",
        ),
        (
            "classification",
            np.arange(1500) * 2,
            "data.target 'label' holds 1,500 distinct numbers (0, 2, 4, ...), but model.task is "
            "classification",
        ),
    ],
    ids=["text for regression", "fractions for classification", "too many classes"],
)
def test_a_target_the_task_cannot_learn_is_a_spec_error_naming_both(
    tmp_path: Path, task: str, label: Any, message: str
) -> None:
    root = target_project(tmp_path / "p", task, label)
    with pytest.raises(SpecError) as raised:
        train(root)
    assert message in str(raised.value)
    with opened(root) as services:
        [run] = services.registry.list_runs("targets")
        assert services.registry.list_versions("targets") == []
    assert run.status == "failed" and message in (run.error or "")


def test_whole_numbers_are_the_classes_of_a_classification(tmp_path: Path) -> None:
    root = target_project(tmp_path / "p", "classification", [0.0, 1.0, 2.0] * 20)
    assert train(root).version.version == 1
