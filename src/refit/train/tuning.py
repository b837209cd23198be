"""The tuning step: search `model.tune.params` on the training rows, keep the best setting.

Each trial fits the model with one setting on part of the training rows and scores it on the
rest: K cross-validation folds (stratified for classification), or one validation part when
`folds` is None. The holdout the gate judges on is never given to tuning. Trials run `jobs`
at once in worker processes (joblib's loky), in batches of `BATCH` whatever `jobs` is, so a
seed gives the same trials and the same best setting on any machine. A failed trial is
recorded and the search goes on; once `timeout` has passed no trial starts.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from refit.errors import SpecError, TrainingError
from refit.registry import ModelVersionRow
from refit.spec import METRICS, DataSpec, ModelSpec, ParamSpace, Sampler, Task, TuneSpec
from refit.train._samplers import make_proposer, warm_params
from refit.train._spaces import MAX_GRID, grid_values
from refit.train.metrics import score
from refit.train.pipeline import fit_model, resolve_estimator, target_array

BATCH = 8
"""Trials proposed at once (TPE learns from a batch only once all of it has run)."""
DEFAULT_CLUSTERS = range(2, 11)
"""The k a clustering without `model.tune` searches."""
CLUSTER_PARAMS = ("n_clusters", "n_components")
TPE_MISSING = "sampler tpe needs optuna: pip install 'refit[tune]'"


@dataclass(frozen=True)
class Trial:
    """One setting tried: its parameters, its mean score over the folds, how long it took."""

    number: int
    params: dict[str, Any]
    score: float | None
    duration_s: float
    state: str
    """"complete", or "failed: <error>"."""

    @property
    def complete(self) -> bool:
        return self.state == "complete"

    def to_dict(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "params": self.params,
            "score": self.score,
            "duration_s": self.duration_s,
            "state": self.state,
        }


@dataclass(frozen=True)
class Progress:
    """What `on_trial` hears after each trial."""

    trial: Trial
    done: int
    total: int | None
    """The planned number of trials; None when only the timeout bounds the search."""
    best: Trial | None
    metric: str


@dataclass(frozen=True)
class Tuned:
    """The search's outcome: the model spec with the best parameters, and its record."""

    model_spec: ModelSpec
    best: Trial
    record: dict[str, Any]
    """What the version's `tuning` column holds."""


OnTrial = Callable[[Progress], None]


def trial_line(progress: Progress) -> str:
    """`trial 3/20 n_neighbors=7 roc_auc=0.9412 (0.21 s)`: one trial on one line."""
    trial = progress.trial
    of = f"/{progress.total}" if progress.total is not None else ""
    params = " ".join(f"{k}={v}" for k, v in trial.params.items())
    result = f"{progress.metric}={trial.score:.4f}" if trial.score is not None else trial.state
    return f"trial {progress.done}{of} {params} {result} ({trial.duration_s:.2f} s)"


def default_tune(model_spec: ModelSpec) -> TuneSpec | None:
    """A clustering's search when it has no `model.tune`: k (`n_clusters`, or `n_components`
    for a mixture) over 2..10 on a grid, unless `model.params` sets it."""
    if model_spec.task is not Task.CLUSTERING or model_spec.tune is not None:
        return None
    if model_spec.estimator is None:
        return None
    module_name, _, class_name = model_spec.estimator.rpartition(".")
    try:  # an estimator that does not resolve is check_model's to report
        taken = inspect.signature(getattr(importlib.import_module(module_name), class_name))
    except Exception:
        return None
    for name in CLUSTER_PARAMS:
        if name in taken.parameters and name not in model_spec.params:
            space = ParamSpace(kind="int", low=DEFAULT_CLUSTERS.start, high=DEFAULT_CLUSTERS[-1])
            return TuneSpec(params={name: space}, sampler=Sampler.GRID, trials=None, folds=None)
    return None


def best_params(version: ModelVersionRow | None) -> dict[str, Any] | None:
    """A version's best parameters, for a warm start: its tuning's best trial's over its own."""
    if version is None:
        return None
    tuning = version.tuning or {}
    trials = tuning.get("trials") or []
    best = trials[tuning["best"]]["params"] if trials else {}
    return {**version.params, **best}


def check_search(model_spec: ModelSpec) -> None:
    """Refuse a search that cannot run, before any work: optuna missing for TPE, a space that
    names a parameter the estimator does not take, a grid too large, log with a step."""
    search = model_spec.tune
    if search is None:
        return
    if search.sampler is Sampler.TPE and importlib.util.find_spec("optuna") is None:
        raise SpecError(f"model.tune.sampler: {TPE_MISSING}")
    for name, space in search.params.items():
        if space.log and space.step is not None:
            raise SpecError(
                f"model.tune.params.{name}: a log range takes no step; give log or step"
            )
    if search.sampler is Sampler.GRID:
        size = math.prod(len(grid_values(n, s)) for n, s in search.params.items())
        if size > MAX_GRID and search.trials is None:
            raise SpecError(
                f"model.tune.params: the grid holds {size:,} combinations (at most "
                f"{MAX_GRID:,} without trials): set model.tune.trials, or narrow the spaces"
            )
    if model_spec.estimator is not None:
        probe = {name: _first(space) for name, space in search.params.items()}
        try:
            resolve_estimator(model_spec.estimator, {**model_spec.params, **probe})
        except SpecError as exc:
            raise SpecError(
                "model.tune.params: " + exc.message.removeprefix("model.params: ")
            ) from None


def tune(
    frame_train: pd.DataFrame,
    data: DataSpec,
    model_spec: ModelSpec,
    root: Path,
    *,
    production_params: Mapping[str, Any] | None = None,
    on_trial: OnTrial | None = None,
) -> Tuned:
    """Search `model_spec.tune` on `frame_train` (the training rows only) and return the best.

    `production_params` (the production version's best parameters) are tried first when
    `warm_start` is on and the space holds every one of them."""
    search = model_spec.tune
    if search is None:
        raise SpecError("model.tune: not set, so there is nothing to search")
    check_search(model_spec)
    metric = model_spec.tune_metric
    higher = METRICS[metric][1]
    jobs = search.jobs or os.cpu_count() or 1
    deadline = None if search.timeout_seconds is None else time.time() + search.timeout_seconds
    parts = _parts(frame_train, data, model_spec, search)
    warm, warm_note = warm_params(search, production_params)
    proposer = make_proposer(search, warm, higher)
    report = on_trial or (lambda _: None)
    trials: list[Trial] = []
    best: Trial | None = None
    started = time.perf_counter()
    work = _Work(frame_train, data, model_spec, root, parts, metric, jobs > 1)
    with _workers(jobs) as run:
        while deadline is None or time.time() < deadline:
            batch = proposer.ask(BATCH)
            if not batch:
                break
            numbered = [(len(trials) + i + 1, params) for i, params in enumerate(batch)]
            ran = [t for t in run(work, numbered, deadline) if t is not None]
            proposer.tell([t.score for t in ran])
            for trial in ran:
                trials.append(trial)
                if trial.complete and (best is None or _better(trial, best, higher)):
                    best = trial
                report(Progress(trial, len(trials), proposer.total, best, metric))
            if len(ran) < len(batch):  # the timeout stopped the batch
                break
    if best is None:
        first = next((t.state for t in trials), "no trial started before the timeout")
        raise TrainingError(f"tuning failed: every trial failed; the first: {first}")
    record = {
        "sampler": search.sampler.value,
        "metric": metric,
        "folds": search.folds,
        "best": trials.index(best),
        "warm_start": warm is not None,
        "warm_start_note": warm_note,
        "duration_s": round(time.perf_counter() - started, 4),
        "trials": [t.to_dict() for t in trials],
    }
    merged = {**model_spec.params, **best.params}
    return Tuned(model_spec.model_copy(update={"params": merged}), best, record)


# --- the rows each trial fits and scores ---------------------------------------------------


Parts = list[tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]]


def _parts(frame: pd.DataFrame, data: DataSpec, model: ModelSpec, search: TuneSpec) -> Parts:
    """(fit rows, score rows) positions: the folds, or one validation part."""
    from sklearn.model_selection import KFold, StratifiedKFold, train_test_split

    rows = len(frame)
    positions = np.arange(rows)
    labels = None
    if model.task is Task.CLASSIFICATION and data.target is not None:
        labels = target_array(frame, data)
        if np.unique(labels, return_counts=True)[1].min() < (search.folds or 2):
            labels = None  # a class too small to reach every part: plain folds
    if search.folds is None:
        if rows < 2:
            raise TrainingError(f"tuning needs at least 2 training rows, got {rows}")
        fit, held = train_test_split(
            positions,
            test_size=search.validation_fraction,
            random_state=search.seed,
            stratify=labels,
        )
        return [(np.sort(fit), np.sort(held))]
    if rows < search.folds:
        raise TrainingError(
            f"model.tune.folds is {search.folds}, but the training part has {rows} rows: "
            "lower folds, or set folds: null to score on one validation part"
        )
    if labels is not None:
        folds: Any = StratifiedKFold(search.folds, shuffle=True, random_state=search.seed)
        return list(folds.split(positions, labels))
    return list(KFold(search.folds, shuffle=True, random_state=search.seed).split(positions))


@dataclass(frozen=True)
class _Work:
    frame: pd.DataFrame
    data: DataSpec
    model: ModelSpec
    root: Path
    parts: Parts
    metric: str
    parallel: bool


def _run_trial(work: _Work, number: int, params: dict[str, Any], deadline: float | None) -> Any:
    """Fit and score one setting on every part; None when the timeout passed before it began."""
    if deadline is not None and time.time() >= deadline:
        return None
    start = time.perf_counter()
    try:
        value = _score_setting(work, params)
        state = "complete" if math.isfinite(value) else "failed: the score is not a number"
    except Exception as exc:
        value, state = math.nan, f"failed: {_message(exc)}"
    duration = round(time.perf_counter() - start, 4)
    return Trial(number, params, value if state == "complete" else None, duration, state)


def _score_setting(work: _Work, params: dict[str, Any]) -> float:
    settings = {**work.model.params, **params}
    if work.parallel and work.model.estimator is not None and "n_jobs" not in settings:
        estimator = resolve_estimator(work.model.estimator, settings)
        if "n_jobs" in estimator.get_params(deep=False):
            settings["n_jobs"] = 1  # the trials already use every core
    model_spec = work.model.model_copy(update={"params": settings})
    features = list(work.data.features)
    scores = []
    for fit_rows, held_rows in work.parts:
        model = fit_model(work.frame.iloc[fit_rows], work.data, model_spec, work.root)
        held = work.frame.iloc[held_rows]
        y: Any = None if work.data.target is None else target_array(held, work.data)
        scores.append(score(model, held[features], y, work.model.task, work.metric))
    return float(np.mean(scores))


Runner = Callable[[_Work, list[tuple[int, dict[str, Any]]], float | None], list[Any]]


class _workers:
    """Runs a batch of trials: in this process for one job, else in `jobs` loky processes
    kept for the whole search."""

    def __init__(self, jobs: int) -> None:
        self.jobs = jobs
        self.parallel: Any = None

    def __enter__(self) -> Runner:
        if self.jobs > 1:
            from joblib import Parallel

            self.parallel = Parallel(n_jobs=self.jobs, backend="loky").__enter__()
        return self._run

    def __exit__(self, *exc: object) -> None:
        if self.parallel is not None:
            self.parallel.__exit__(*exc)

    def _run(
        self, work: _Work, batch: list[tuple[int, dict[str, Any]]], deadline: float | None
    ) -> list[Any]:
        if self.parallel is None:
            return [_run_trial(work, n, p, deadline) for n, p in batch]
        from joblib import delayed

        return list(self.parallel(delayed(_run_trial)(work, n, p, deadline) for n, p in batch))


def _better(trial: Trial, best: Trial, higher: bool) -> bool:
    assert trial.score is not None and best.score is not None
    return trial.score > best.score if higher else trial.score < best.score


def _message(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _first(space: ParamSpace) -> Any:
    if space.choices is not None:
        return space.choices[0]
    assert space.low is not None
    return int(space.low) if space.kind == "int" else float(space.low)
