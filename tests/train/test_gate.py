from typing import Any

import pytest

from refit.spec import GateSpec
from refit.train.gate import GateDecision, decide
from refit.train.significance import Comparison

CASES: list[tuple[str, bool, dict[str, Any], float, float | None, int | None, bool, str]] = [
    # metric, higher is better, gate, challenger, champion, champion version, promote, reason
    (
        "roc_auc", True, {"min": 0.7}, 0.61, 0.5, 3, False,
        "roc_auc 0.61 is below the floor 0.7",
    ),
    (
        "roc_auc", True, {"min": 0.7}, 0.7, None, None, True,
        "roc_auc 0.7 reaches the floor 0.7 and there is no production version",
    ),
    (
        "roc_auc", True, {}, 0.52, None, None, True,
        "roc_auc 0.52 has no floor and there is no production version",
    ),
    (
        "roc_auc", True, {"min": 0.7}, 0.981, 0.975, 3, True,
        "roc_auc 0.981 beats production v3 (0.975) by 0.006 > 0",
    ),
    (
        "roc_auc", True, {}, 0.975, 0.975, 3, False,
        "roc_auc 0.975 ties production v3 (0.975): a tie keeps production "
        "(gate.promote_ties is false)",
    ),
    (
        "roc_auc", True, {"promote_ties": True}, 0.975, 0.975, 3, True,
        "roc_auc 0.975 ties production v3 (0.975), which is enough with gate.promote_ties",
    ),
    (
        "roc_auc", True, {"min_improvement": 0.01}, 0.98, 0.975, 3, False,
        "roc_auc 0.98 is not better than production v3 (0.975) by more than 0.01",
    ),
    (
        "roc_auc", True, {}, 0.97, 0.975, 2, False,
        "roc_auc 0.97 is not better than production v2 (0.975)",
    ),
    # float rounding: 0.3 - 0.1 is 0.19999999999999998, a tie with a 0.2 margin
    (
        "accuracy", True, {"min_improvement": 0.2}, 0.3, 0.1, 1, False,
        "accuracy 0.3 beats production v1 (0.1) by exactly 0.2: a tie keeps production "
        "(gate.promote_ties is false)",
    ),
    (
        "accuracy", True, {"min_improvement": 0.2, "promote_ties": True}, 0.3, 0.1, 1, True,
        "accuracy 0.3 beats production v1 (0.1) by exactly 0.2, which is enough with "
        "gate.promote_ties",
    ),
    (
        "accuracy", True, {"min_improvement": 0.2}, 0.31, 0.1, 1, True,
        "accuracy 0.31 beats production v1 (0.1) by 0.21 > 0.2",
    ),
    (
        "rmse", False, {"max": 55.0}, 60.1, 50.0, 2, False,
        "rmse 60.1 is above the ceiling 55",
    ),
    (
        "rmse", False, {"max": 55.0}, 54.2, None, None, True,
        "rmse 54.2 is within the ceiling 55 and there is no production version",
    ),
    (
        "rmse", False, {}, 54.2, None, None, True,
        "rmse 54.2 has no ceiling and there is no production version",
    ),
    (
        "rmse", False, {"min_improvement": 0.5}, 54.2, 53.9, 2, False,
        "rmse 54.2 is not better than production v2 (53.9) by more than 0.5",
    ),
    (
        "rmse", False, {"min_improvement": 0.5}, 53.0, 53.9, 2, True,
        "rmse 53 beats production v2 (53.9) by 0.9 > 0.5",
    ),
    (
        "rmse", False, {"min_improvement": 0.5}, 53.4, 53.9, None, False,
        "rmse 53.4 beats production (53.9) by exactly 0.5: a tie keeps production "
        "(gate.promote_ties is false)",
    ),
    (
        "log_loss", False, {}, 0.3, 0.3, 5, False,
        "log_loss 0.3 ties production v5 (0.3): a tie keeps production "
        "(gate.promote_ties is false)",
    ),
    (
        "log_loss", False, {"promote_ties": True}, 0.3, 0.3, 5, True,
        "log_loss 0.3 ties production v5 (0.3), which is enough with gate.promote_ties",
    ),
    (
        "mae", False, {"min_improvement": 0.1}, 2.0, 2.0, 5, False,
        "mae 2 is not better than production v5 (2) by more than 0.1",
    ),
    (
        "r2", True, {"min": 0.5}, float("nan"), 0.4, 1, False,
        "r2 nan is not a finite number",
    ),
    (
        "r2", True, {}, 0.6, float("nan"), 1, True,
        "r2 0.6 has no floor and production has no score",
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    ("metric", "higher", "gate", "challenger", "champion", "version", "promote", "reason"), CASES
)
def test_decide(
    metric: str,
    higher: bool,
    gate: dict[str, Any],
    challenger: float,
    champion: float | None,
    version: int | None,
    promote: bool,
    reason: str,
) -> None:
    decision = decide(metric, higher, GateSpec(**gate), challenger, champion, version)
    assert decision == GateDecision(promote, reason)


def test_the_bound_of_the_other_direction_does_not_apply() -> None:
    assert decide("rmse", False, GateSpec(min=100.0), 5.0, None).promote
    assert decide("roc_auc", True, GateSpec(max=0.1), 0.9, None).promote


# --- with a paired comparison -----------------------------------------------------------------


def comparison(difference: float, low: float, high: float) -> Comparison:
    return Comparison(difference, low, high, 0.95, "delong", 64, None, 0, (high - low) / 3.92)


INTERVAL_CASES: list[tuple[dict[str, Any], tuple[float, float, float], bool, str]] = [
    # gate, (difference, low, high), promote, reason
    (
        {}, (0.012, 0.004, 0.020), True,
        "roc_auc 0.962 vs production v7 0.95: +0.012 [0.004, 0.020] at 95% (delong, 64 rows), "
        "clearly better",
    ),
    (
        {}, (0.003, -0.010, 0.016), False,
        "roc_auc 0.962 vs production v7 0.95: +0.003 [-0.010, 0.016] at 95% (delong, 64 rows), "
        "not clearly better: kept production v7",
    ),
    (
        {"min_improvement": 0.005}, (0.012, 0.004, 0.020), False,
        "roc_auc 0.962 vs production v7 0.95: +0.012 [0.004, 0.020] at 95% (delong, 64 rows), "
        "not clearly better by more than 0.005: kept production v7",
    ),
    (
        {"promote_ties": True}, (0.003, -0.010, 0.016), True,
        "roc_auc 0.962 vs production v7 0.95: +0.003 [-0.010, 0.016] at 95% (delong, 64 rows), "
        "not clearly worse, which is enough with gate.promote_ties",
    ),
    (
        {"promote_ties": True}, (-0.03, -0.05, -0.01), False,
        "roc_auc 0.962 vs production v7 0.95: -0.030 [-0.050, -0.010] at 95% (delong, 64 rows), "
        "not clearly better: kept production v7",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("gate", "interval", "promote", "reason"), INTERVAL_CASES)
def test_with_a_comparison_the_interval_decides(
    gate: dict[str, Any], interval: tuple[float, float, float], promote: bool, reason: str
) -> None:
    found = decide("roc_auc", True, GateSpec(**gate), 0.962, 0.95, 7, comparison(*interval))
    assert found == GateDecision(promote, reason)


def test_the_floor_still_comes_first_and_the_first_version_needs_only_it() -> None:
    clear = comparison(0.2, 0.1, 0.3)
    assert not decide("roc_auc", True, GateSpec(min=0.99), 0.962, 0.95, 7, clear).promote
    first = decide("roc_auc", True, GateSpec(min=0.9), 0.962, None, None, None)
    assert first == GateDecision(
        True, "roc_auc 0.962 reaches the floor 0.9 and there is no production version"
    )
    assert not decide("roc_auc", True, GateSpec(min=0.97), 0.962, None).promote
