"""The values a search space holds: a grid's list of them, a random draw of one, whether a
given value lies in it, and the same space as an Optuna distribution (for TPE)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from refit.errors import SpecError
from refit.spec import ParamSpace

MAX_GRID = 100_000
"""The most combinations a grid search enumerates (beyond it, `trials` must cap it)."""


def grid_values(name: str, space: ParamSpace) -> list[Any]:
    """Every value a grid takes from `space`: its choices; an int range by 1 (or `step`); a float
    range by `step`, or `points` values (log-spaced with `log`)."""
    if space.choices is not None:
        return list(space.choices)
    low, high = _bounds(space)
    if space.step is not None:
        count = math.floor((high - low) / space.step + 1e-9) + 1
        if count > MAX_GRID:
            raise SpecError(
                f"model.tune.params.{name}: a grid of [{low:g}, {high:g}] by {space.step:g} "
                f"takes {count:,} values (at most {MAX_GRID:,}): give a larger step, or "
                "sampler: random"
            )
        values = [low + i * space.step for i in range(count)]
    elif space.kind == "int" and not space.log:
        count = int(high - low) + 1
        if count > MAX_GRID:
            raise SpecError(
                f"model.tune.params.{name}: a grid of [{low:g}, {high:g}] takes {count:,} "
                f"values (at most {MAX_GRID:,}): give a step, or sampler: random"
            )
        values = [low + i for i in range(count)]
    else:
        spaced = np.geomspace if space.log else np.linspace
        values = [float(v) for v in spaced(low, high, space.points)]
    if space.kind == "int":
        return sorted({round(v) for v in values})
    return [float(v) for v in values]


def draw(space: ParamSpace, rng: np.random.Generator) -> Any:
    """One value of `space`, at random (uniform, or log-uniform with `log`)."""
    if space.choices is not None:
        return space.choices[int(rng.integers(len(space.choices)))]
    low, high = _bounds(space)
    if space.step is not None:
        steps = math.floor((high - low) / space.step + 1e-9)
        value = low + int(rng.integers(steps + 1)) * space.step
    elif space.log:
        top = math.log(high + 1) if space.kind == "int" else math.log(high)
        value = math.exp(rng.uniform(math.log(low), top))
    elif space.kind == "int":
        value = float(rng.integers(int(low), int(high) + 1))
    else:
        value = float(rng.uniform(low, high))
    return min(math.floor(value), int(high)) if space.kind == "int" else float(value)


def finite_size(spaces: Mapping[str, ParamSpace]) -> int | None:
    """How many distinct combinations the spaces hold, None when a float range is in them."""
    size = 1
    for space in spaces.values():
        if space.choices is not None:
            size *= len(space.choices)
        elif space.kind == "int":
            low, high = _bounds(space)
            size *= math.floor((high - low) / (space.step or 1) + 1e-9) + 1
        else:
            return None
    return size


def outside(space: ParamSpace, value: Any) -> str | None:
    """Why `value` does not lie in `space` (None: it does)."""
    if space.choices is not None:
        return None if value in space.choices else "is not one of its choices"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "is not a number"
    low, high = _bounds(space)
    if not low <= value <= high:
        return f"lies outside [{low:g}, {high:g}]"
    if space.kind == "int" and value != int(value):
        return "is not a whole number"
    if space.step is not None:
        offset = (value - low) / space.step
        if abs(offset - round(offset)) > 1e-9:
            return f"is not on a step of {space.step:g} from {low:g}"
    return None


def distribution(space: ParamSpace) -> Any:
    """The Optuna distribution of `space`; choices are drawn by their index (any YAML value)."""
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    if space.choices is not None:
        return CategoricalDistribution(list(range(len(space.choices))))
    low, high = _bounds(space)
    if space.kind == "int":
        step = 1 if space.step is None else int(space.step)
        return IntDistribution(int(low), int(high), log=space.log, step=step)
    return FloatDistribution(low, high, log=space.log, step=space.step)


def from_distribution(space: ParamSpace, value: Any) -> Any:
    """The space's value for what Optuna suggested (a choice's index back to the choice)."""
    if space.choices is not None:
        return space.choices[int(value)]
    return int(value) if space.kind == "int" else float(value)


def to_distribution(space: ParamSpace, value: Any) -> Any:
    """What Optuna takes for a value of the space (a choice as its index)."""
    return space.choices.index(value) if space.choices is not None else value


def _bounds(space: ParamSpace) -> tuple[float, float]:
    if space.low is None or space.high is None:
        raise SpecError("model.tune.params: a range needs [low, high]")
    return space.low, space.high
