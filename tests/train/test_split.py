from typing import Any

import numpy as np
import pandas as pd
import pytest

from refit.errors import TrainingError
from refit.spec import DataSpec, ModelSpec, SplitKind
from refit.train.split import split


def data_spec(time_column: str | None = "at") -> DataSpec:
    return DataSpec.model_validate(
        {
            "source": {"kind": "csv", "path": "data/*.csv"},
            "target": "label",
            "features": {"x": "float"},
            "time_column": time_column,
        }
    )


def model_spec(task: str = "classification", **holdout: Any) -> ModelSpec:
    estimator = "sklearn.linear_model." + (
        "LogisticRegression" if task == "classification" else "Ridge"
    )
    return ModelSpec.model_validate({"task": task, "estimator": estimator, "holdout": holdout})


def frame_of(labels: list[Any]) -> pd.DataFrame:
    rows = len(labels)
    return pd.DataFrame(
        {
            "x": np.arange(rows, dtype=float),
            "label": labels,
            "at": pd.date_range("2024-01-01", periods=rows, freq="h"),
        }
    )


def test_random_split_is_seeded_sized_and_covers_every_row() -> None:
    frame = frame_of([0.5 * i for i in range(400)])
    spec = model_spec("regression", fraction=0.25, seed=3)
    first, again = split(frame, data_spec(), spec), split(frame, data_spec(), spec)
    assert first.method is SplitKind.RANDOM and first.note is None
    assert 70 <= len(first.holdout) <= 130  # 100 expected; 3 binomial standard deviations
    assert sorted([*first.train.index, *first.holdout.index]) == list(range(400))
    assert list(first.holdout.index) == list(again.holdout.index)
    other = split(frame, data_spec(), model_spec("regression", fraction=0.25, seed=4))
    assert list(other.holdout.index) != list(first.holdout.index)


@pytest.mark.parametrize("kind", ["random", "stratified"])
def test_rows_keep_their_side_as_the_snapshot_grows(kind: str) -> None:
    """The champion's training rows never reach a later holdout: the gate stays fair."""
    everything = frame_of(["a", "b", "b", "a", "c"] * 100)
    spec = model_spec(fraction=0.2, split=kind)
    before = split(everything.iloc[:300], data_spec(), spec)
    after = split(everything, data_spec(), spec)
    assert set(before.train.index) <= set(after.train.index)
    assert set(before.holdout.index) <= set(after.holdout.index)


def test_identical_rows_fall_on_the_same_side() -> None:
    frame = pd.concat([frame_of(["a", "b"] * 50)] * 2, ignore_index=True)
    parts = split(frame, data_spec(), model_spec(fraction=0.3))
    held = {tuple(row) for row in parts.holdout.itertuples(index=False)}
    trained = {tuple(row) for row in parts.train.itertuples(index=False)}
    assert held and trained and not held & trained


def test_stratified_split_keeps_class_shares() -> None:
    frame = frame_of(["a"] * 400 + ["b"] * 100)
    parts = split(frame, data_spec(), model_spec(fraction=0.2))
    assert parts.method is SplitKind.STRATIFIED and parts.note is None
    shares = parts.holdout["label"].value_counts(normalize=True)
    assert 0.7 <= shares["a"] <= 0.9 and 0.1 <= shares["b"] <= 0.3


def test_stratified_split_puts_every_class_on_both_sides() -> None:
    frame = frame_of(["a"] * 40 + ["b"] * 2)
    parts = split(frame, data_spec(), model_spec(fraction=0.2, seed=5))
    assert set(parts.holdout["label"]) == set(parts.train["label"]) == {"a", "b"}


@pytest.mark.parametrize(
    ("labels", "reason"),
    [
        (
            ["a"] * 19 + ["b"],
            "class 'b' has 1 row, and a stratified split needs at least 2 per class",
        ),
        (
            ["a", "b", "c", "d"] * 3,
            "a holdout of 3 row(s) cannot hold all 4 classes",
        ),
    ],
)
def test_stratified_split_falls_back_to_random_and_says_why(labels: list[str], reason: str) -> None:
    parts = split(frame_of(labels), data_spec(), model_spec(fraction=0.2, seed=1))
    assert parts.method is SplitKind.RANDOM
    assert parts.note == f"used a random split: {reason}"


def test_time_split_holds_out_the_latest_rows() -> None:
    frame = frame_of(["a", "b"] * 10).sample(frac=1.0, random_state=0)
    frame.loc[frame.index[0], "at"] = pd.NaT
    parts = split(frame, data_spec(), model_spec(split="time", fraction=0.3))
    assert parts.method is SplitKind.TIME
    assert len(parts.holdout) == 6
    assert parts.holdout["at"].min() > parts.train["at"].max()
    assert parts.train["at"].isna().sum() == 1  # a row without a time is only trained on


@pytest.mark.parametrize(
    ("labels", "holdout", "message"),
    [
        (["a", "b"] * 4 + ["a"], {}, "the snapshot has 9 row(s); training needs at least 10"),
        (
            ["a", "b"] * 5,
            {"fraction": 0.95},
            "holding out 95% of 10 rows leaves none to train on",
        ),
        (["a"] * 12, {}, "the target 'label' has a single class ('a') in 12 rows"),
        (
            ["a"] * 16 + ["b"] * 4,
            {"split": "time"},
            "the training part has a single class ('a') in 16 rows of this time split",
        ),
    ],
)
def test_split_refuses_snapshots_it_cannot_split(
    labels: list[str], holdout: dict[str, Any], message: str
) -> None:
    with pytest.raises(TrainingError) as caught:
        split(frame_of(labels), data_spec(), model_spec(**holdout))
    assert message in str(caught.value)


def test_time_split_needs_the_time_column() -> None:
    with pytest.raises(TrainingError, match=r"a time split needs data\.time_column"):
        split(frame_of(["a", "b"] * 6), data_spec(None), model_spec(split="time"))
    with pytest.raises(TrainingError, match="needs the column 'at', which the snapshot lacks"):
        split(frame_of(["a", "b"] * 6).drop(columns="at"), data_spec(), model_spec(split="time"))
