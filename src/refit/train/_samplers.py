"""How a search proposes settings: the grid, seeded random draws, Optuna's TPE; and the warm
start from the production version's best parameters."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from refit.spec import Sampler, TuneSpec
from refit.train._spaces import (
    distribution,
    draw,
    finite_size,
    from_distribution,
    grid_values,
    outside,
    to_distribution,
)

# --- warm start ------------------------------------------------------------------------------


def warm_params(
    search: TuneSpec, production: Mapping[str, Any] | None
) -> tuple[dict[str, Any] | None, str | None]:
    """Production's best parameters when the space holds them all, and why not otherwise."""
    if not search.warm_start:
        return None, "warm_start is off"
    if production is None:
        return None, "no version in production"
    warm: dict[str, Any] = {}
    for name, space in search.params.items():
        if name not in production:
            return None, f"production's parameters do not set {name}"
        why = outside(space, production[name])
        if why is not None:
            return None, f"production's {name}={production[name]!r} {why}"
        warm[name] = production[name]
    return warm, None


# --- samplers ------------------------------------------------------------------------------


class Proposer:
    """Proposes settings a batch at a time and hears how they scored."""

    total: int | None = None

    def ask(self, count: int) -> list[dict[str, Any]]:
        raise NotImplementedError

    def tell(self, scores: list[float | None]) -> None:
        """The scores of the last batch asked for, in its order (None: failed)."""
        return None


def make_proposer(search: TuneSpec, warm: dict[str, Any] | None, higher: bool) -> Proposer:
    if search.sampler is Sampler.GRID:
        return _Grid(search, warm)
    if search.sampler is Sampler.RANDOM:
        return _Random(search, warm)
    return _Tpe(search, warm, higher)


def _key(params: Mapping[str, Any]) -> str:
    return repr(sorted(params.items()))


class _Grid(Proposer):
    """Every combination, in order; with `trials` below the grid's size, a seeded sample."""

    def __init__(self, search: TuneSpec, warm: dict[str, Any] | None) -> None:
        names = list(search.params)
        values = [grid_values(n, search.params[n]) for n in names]
        size = math.prod(len(v) for v in values)
        chosen: Iterator[tuple[Any, ...]]
        if search.trials is not None and search.trials < size:
            rng = np.random.default_rng(search.seed)
            picks = np.sort(rng.choice(size, size=search.trials, replace=False))
            chosen = (_decode(int(i), values) for i in picks)
        else:
            chosen = itertools.product(*values)
        settings = [dict(zip(names, combo, strict=True)) for combo in chosen]
        if warm is not None:
            warm_key = _key(warm)
            settings = [warm, *(s for s in settings if _key(s) != warm_key)]
            if search.trials is not None:
                settings = settings[: search.trials]
        self.pending = iter(settings)
        self.total = len(settings)

    def ask(self, count: int) -> list[dict[str, Any]]:
        return list(itertools.islice(self.pending, count))


def _decode(index: int, values: list[list[Any]]) -> tuple[Any, ...]:
    """The combination at `index` of the grid's product, in `itertools.product` order."""
    combo = []
    for options in reversed(values):
        index, at = divmod(index, len(options))
        combo.append(options[at])
    return tuple(reversed(combo))


class _Random(Proposer):
    """Seeded draws, without repeating a setting while the space has unseen ones."""

    ATTEMPTS = 100

    def __init__(self, search: TuneSpec, warm: dict[str, Any] | None) -> None:
        self.spaces = search.params
        self.rng = np.random.default_rng(search.seed)
        self.left = search.trials
        self.size = finite_size(search.params)
        self.seen: set[str] = set()
        self.warm = warm
        self.total = search.trials
        if self.total is not None and self.size is not None:
            self.total = min(self.total, self.size)

    def ask(self, count: int) -> list[dict[str, Any]]:
        batch: list[dict[str, Any]] = []
        while len(batch) < count and (self.left is None or self.left > 0):
            if self.size is not None and len(self.seen) >= self.size:
                break
            setting = self._next()
            self.seen.add(_key(setting))
            batch.append(setting)
            if self.left is not None:
                self.left -= 1
        return batch

    def _next(self) -> dict[str, Any]:
        if self.warm is not None:
            warm, self.warm = self.warm, None
            return warm
        for _ in range(self.ATTEMPTS):
            setting = {n: draw(s, self.rng) for n, s in self.spaces.items()}
            if _key(setting) not in self.seen:
                break
        return setting


class _Tpe(Proposer):
    """Optuna's TPE sampler, seeded, asked for a batch at a time and told its results."""

    def __init__(self, search: TuneSpec, warm: dict[str, Any] | None, higher: bool) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.spaces = search.params
        self.distributions = {n: distribution(s) for n, s in search.params.items()}
        sampler = optuna.samplers.TPESampler(seed=search.seed)
        self.study = optuna.create_study(
            direction="maximize" if higher else "minimize", sampler=sampler
        )
        if warm is not None:
            self.study.enqueue_trial(
                {n: to_distribution(self.spaces[n], v) for n, v in warm.items()}
            )
        self.left = search.trials
        self.total = search.trials
        self.pending: list[Any] = []

    def ask(self, count: int) -> list[dict[str, Any]]:
        self.pending = []
        while len(self.pending) < count and (self.left is None or self.left > 0):
            self.pending.append(self.study.ask(self.distributions))
            if self.left is not None:
                self.left -= 1
        return [
            {n: from_distribution(self.spaces[n], asked.params[n]) for n in self.spaces}
            for asked in self.pending
        ]

    def tell(self, scores: list[float | None]) -> None:
        import optuna

        for asked, value in zip(self.pending, scores, strict=False):
            if value is not None:
                self.study.tell(asked, value)
            else:
                self.study.tell(asked, state=optuna.trial.TrialState.FAIL)
        for asked in self.pending[len(scores) :]:  # not started before the timeout
            self.study.tell(asked, state=optuna.trial.TrialState.FAIL)
