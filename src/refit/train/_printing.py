"""Where a training run's prints go."""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Callable
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


def printing_to_stderr(function: Callable[P, R]) -> Callable[P, R]:
    """`function`, with what it prints going to stderr: an estimator's log while it fits
    (LightGBM's), or a user's function's prints, never reach stdout, where a command answers
    (`refit train --json`)."""

    @functools.wraps(function)
    def printing(*args: P.args, **kwargs: P.kwargs) -> R:
        with contextlib.redirect_stdout(sys.stderr):
            return function(*args, **kwargs)

    return printing
