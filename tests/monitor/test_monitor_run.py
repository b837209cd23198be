"""One run of the monitor on a real project: logs written as a server writes them, judged
against the version's training snapshot and holdout, feedback joined by request id."""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest

from logged import log_feedback, log_predictions, predict
from refit.data.ingest import run_ingest
from refit.examples import create_project, drop_batch
from refit.monitor.run import named, run_monitor
from refit.parquet import read_snapshot
from refit.project import load_project
from refit.registry.monitoring import (
    answer_request,
    latest_report,
    list_logs,
    list_reports,
    open_request,
    request_training,
)
from refit.registry.tables import ModelVersionRow, utcnow
from refit.services import Services, open_services
from refit.train.run import run_training

NAME = "breast-cancer"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A breast-cancer project with v1 trained on its first batch (copied for each test)."""
    root = create_project(tmp_path_factory.mktemp("monitor") / "p", NAME)
    with open_services(load_project(root)) as services:
        assert run_ingest(services.project, services.registry, services.store).snapshot
        run_training(services)
    return root


@pytest.fixture
def root(trained: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(trained, tmp_path / "p"))


def opened(root: Path, **monitor: str) -> Services:
    env = {f"REFIT_MONITOR__{key.upper()}": value for key, value in monitor.items()}
    return open_services(load_project(root, env))


def v(services: Services, number: int = 1) -> ModelVersionRow:
    return services.registry.get_version(NAME, number)


def training_rows(services: Services, version: ModelVersionRow, n: int, seed: int) -> pd.DataFrame:
    """`n` rows drawn from the version's own training snapshot: the world it was trained on."""
    snapshot = services.registry.get_snapshot(version.snapshot_id, NAME)
    frame = read_snapshot(services.store, snapshot)
    return frame.sample(n, replace=True, random_state=seed).reset_index(drop=True)


def test_rows_from_the_training_data_are_not_flagged(root: Path) -> None:
    with opened(root, retrain_on_drift="true") as services:
        log_predictions(services, v(services), training_rows(services, v(services), 2_000, 1))
        result = run_monitor(services)
        assert result.status == "judged"
        assert result.report.rows == 2_000
        assert result.report.drifted == []
        assert len(result.report.drift) == 31  # 30 features and the predictions
        assert result.request is None and open_request(services.registry, NAME) is None
        assert "no drift in 31 checked" in result.line


def test_one_shifted_feature_is_flagged_alone_and_asks_for_training(root: Path) -> None:
    with opened(root, retrain_on_drift="true") as services:
        rows = training_rows(services, v(services), 1_000, 2)
        rows["mean_texture"] = rows["mean_texture"] * 1.6
        log_predictions(services, v(services), rows)
        result = run_monitor(services)
        report = result.report
        features = [f for f in report.drifted if f != "prediction"]
        assert features == ["mean_texture"]
        assert next(iter(report.drift)) == report.drifted[0]  # flagged first
        assert (
            report.drift["mean_texture"]["drifted"] and report.drift["mean_texture"]["version"] == 1
        )
        scores = [d["score"] for d in report.drift.values() if not d["drifted"]]
        assert scores == sorted(scores, reverse=True)
        request = open_request(services.registry, NAME)
        assert request is not None and result.request is not None
        assert request.trigger == "drift" and request.report_id == report.id
        assert request.cause == f"drift in {', '.join(report.drifted)} (report {report.id})"
        assert report.cause == request.cause
        # Seen again, the same drift does not ask twice.
        again = run_monitor(services)
        assert again.request is not None and again.request.id == request.id


def test_drift_a_run_has_answered_asks_again_only_on_rows_answered_after_it(root: Path) -> None:
    with opened(root, retrain_on_drift="true") as services:
        rows = training_rows(services, v(services), 600, 21)
        rows["mean_texture"] = rows["mean_texture"] * 1.6
        log_predictions(services, v(services), rows, at=utcnow() - timedelta(minutes=5))
        first = run_monitor(services).request
        assert first is not None
        answer_request(services.registry, first.id, "run-that-answered")
        # The same rows, judged again: their drift was acted on, so nothing is asked.
        again = run_monitor(services)
        assert "mean_texture" in again.report.drifted
        assert again.request is None and open_request(services.registry, NAME) is None
        assert "no new rows since run run-that-answered answered the last request" in again.line
        # Rows answered after that run still drift: that is new evidence, asked for anew.
        log_predictions(services, v(services), rows)
        renewed = run_monitor(services).request
        assert renewed is not None and renewed.id != first.id


def test_drift_without_retrain_on_drift_is_reported_without_a_request(root: Path) -> None:
    with opened(root) as services:
        rows = training_rows(services, v(services), 500, 3)
        rows["mean_texture"] = rows["mean_texture"] * 1.6
        log_predictions(services, v(services), rows)
        result = run_monitor(services)
        assert "mean_texture" in result.report.drifted
        assert result.request is None and result.report.cause is None


def test_fewer_rows_than_min_rows_give_no_verdict(root: Path) -> None:
    with opened(root, retrain_on_drift="true", min_rows="100") as services:
        rows = training_rows(services, v(services), 60, 4)
        rows["mean_texture"] = rows["mean_texture"] * 3
        log_predictions(services, v(services), rows)
        result = run_monitor(services)
        assert result.status == "too_few_rows"
        assert result.report.rows == 60 and result.report.drift == {}
        assert result.report.versions == [
            {"version": 1, "rows": 60, "newest": True, "drifted": None}
        ]
        assert result.request is None
        assert "fewer than min_rows 100: no verdict" in result.line


def test_nothing_logged_is_a_report_that_says_so(root: Path) -> None:
    with opened(root) as services:
        result = run_monitor(services)
        assert result.status == "nothing_logged" and result.report.rows == 0
        assert "nothing logged in the window (1h)" in result.line
        assert latest_report(services.registry, NAME) is not None


def test_the_window_keeps_the_recent_rows_and_retention_deletes_old_files(root: Path) -> None:
    with opened(root, window="1h", window_rows="300", retention="1d") as services:
        version = v(services)
        now = utcnow()
        shifted = training_rows(services, version, 400, 5)
        shifted["mean_texture"] = shifted["mean_texture"] * 2
        log_predictions(services, version, shifted, at=now - timedelta(days=2))  # expired
        log_predictions(services, version, shifted, at=now - timedelta(hours=2))  # too old
        log_predictions(services, version, training_rows(services, version, 200, 6), at=now)
        log_predictions(
            services,
            version,
            training_rows(services, version, 400, 7),
            at=now - timedelta(minutes=5),
        )
        old = list_logs(services.registry, NAME, "predictions")[0]
        result = run_monitor(services, now=now + timedelta(seconds=1))
        assert result.forgotten == 1
        assert not services.store.exists(old.uri)
        assert len(list_logs(services.registry, NAME, "predictions")) == 3
        assert result.report.rows == 300  # the newest 300 of the 600 within the hour
        assert result.report.drifted == []


def test_the_report_judges_the_version_of_the_newest_rows(root: Path) -> None:
    drop_batch(root, NAME, 2, 2)
    with opened(root) as services:
        assert run_ingest(services.project, services.registry, services.store).snapshot
        run_training(services)
        first, second = v(services, 1), v(services, 2)
        shifted = training_rows(services, first, 300, 8)
        shifted["mean_texture"] = shifted["mean_texture"] * 2
        now = utcnow()
        log_predictions(services, first, shifted, at=now - timedelta(minutes=2))
        log_predictions(services, second, training_rows(services, second, 300, 9), at=now)
        report = run_monitor(services).report
        assert [(e["version"], e["newest"]) for e in report.versions] == [(1, False), (2, True)]
        assert "mean_texture" in report.versions[0]["drifted"]
        assert report.drifted == [] and {d["version"] for d in report.drift.values()} == {2}


def test_feedback_is_joined_by_request_id_into_live_quality(root: Path) -> None:
    with opened(root, min_labels="30") as services:
        version = v(services)
        rows = training_rows(services, version, 200, 10)
        ids = log_predictions(services, version, rows, spread=timedelta(minutes=30))
        labels, _ = predict(services, version, rows)
        truth = rows["diagnosis"].tolist()
        # Labels for 80 of them, one sent twice (the latest counts), and one for no request.
        log_feedback(services, [*ids[:80], "unknown-id"], ["benign"] * 81)
        log_feedback(services, ids[:80], truth[:80])
        quality = run_monitor(services).report.quality["1"]
        assert quality["rows"] == 200 and quality["labelled"] == 80
        expected = sum(a == b for a, b in zip(labels[:80], truth[:80], strict=True)) / 80
        assert quality["live"]["accuracy"] == pytest.approx(expected)
        assert quality["metric"] == "roc_auc" and quality["holdout"] == version.metrics["roc_auc"]
        assert quality["estimated"] is not None and 0.5 <= quality["estimated"]["accuracy"] <= 1


def test_fewer_labels_than_min_labels_measure_nothing(root: Path) -> None:
    with opened(root, min_labels="30") as services:
        version = v(services)
        rows = training_rows(services, version, 100, 11)
        ids = log_predictions(services, version, rows)
        log_feedback(services, ids[:29], rows["diagnosis"].tolist()[:29])
        quality = run_monitor(services).report.quality["1"]
        assert quality["labelled"] == 29 and quality["live"] is None


@pytest.mark.parametrize(
    ("setting", "cause"),
    [
        ({"min_quality": "0.7"}, "is below min_quality 0.7"),
        ({"max_quality_drop": "0.2"}, "worse than the holdout's"),
    ],
)
def test_wrong_labels_push_live_quality_down_and_ask_for_training(
    root: Path, setting: dict[str, str], cause: str
) -> None:
    with opened(root, min_labels="30", **setting) as services:
        version = v(services)
        rows = training_rows(services, version, 120, 12)
        ids = log_predictions(services, version, rows)
        labels, _ = predict(services, version, rows)
        wrong = ["benign" if label == "malignant" else "malignant" for label in labels]
        log_feedback(services, ids, wrong)
        result = run_monitor(services)
        request = open_request(services.registry, NAME)
        assert request is not None and request.trigger == "quality"
        assert cause in request.cause and "on 120 labelled rows" in request.cause
        assert request.cause.startswith("live quality: roc_auc")
        assert result.report.cause == request.cause


def test_an_open_request_is_kept_with_its_first_cause(root: Path) -> None:
    with opened(root, retrain_on_drift="true") as services:
        first = request_training(services.registry, NAME, "quality", "by hand")
        rows = training_rows(services, v(services), 500, 13)
        rows["mean_texture"] = rows["mean_texture"] * 2
        log_predictions(services, v(services), rows)
        result = run_monitor(services)
        assert result.request is not None and result.request.id == first.id
        assert open_request(services.registry, NAME).cause == "by hand"  # type: ignore[union-attr]
        assert len(list_reports(services.registry, NAME)) == 1


def test_a_long_list_of_drifted_features_names_the_first_five() -> None:
    assert named(["a", "b"]) == "a, b"
    assert named(list("abcdefgh")) == "a, b, c, d, e and 3 more"


def test_a_report_and_its_request_are_stored_alike_in_postgresql(
    tmp_path: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REFIT_STORAGE__METADATA_URL", postgres_url)
    root = create_project(tmp_path / "pg", NAME)
    with opened(root, retrain_on_drift="true") as services:
        assert run_ingest(services.project, services.registry, services.store).snapshot
        run_training(services)
        rows = training_rows(services, v(services), 300, 14)
        rows["mean_texture"] = rows["mean_texture"] * 2
        rows.loc[:9, "mean_radius"] = float("nan")  # a missing rate of its own, and no NaN stored
        log_predictions(services, v(services), rows)
        result = run_monitor(services)
        stored = latest_report(services.registry, NAME)
        assert stored is not None and stored.id == result.report.id
        assert list(stored.drift) == list(result.report.drift)  # the order is kept
        assert "mean_texture" in stored.drifted
        request = open_request(services.registry, NAME)
        assert request is not None and request.report_id == stored.id
