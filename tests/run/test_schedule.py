"""When a job is due: intervals, cron expressions in UTC, and no replay of missed ticks."""

from datetime import UTC, datetime, timedelta, timezone

import pytest

from refit.errors import SpecError
from refit.run.schedule import parse_schedule

NOON = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("5m", 300), ("2h", 7200), ("1d", 86400), (" 45s ", 45), ("90m", 5400)],
)
def test_intervals_in_every_unit(text: str, seconds: int) -> None:
    schedule = parse_schedule(text)
    assert schedule.every == seconds
    assert schedule.next_after(NOON) == NOON + timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("cron", "last", "expected"),
    [
        ("*/5 * * * *", NOON + timedelta(minutes=1), NOON + timedelta(minutes=5)),
        ("0 * * * *", NOON, NOON + timedelta(hours=1)),  # a tick is after, never at, the moment
        ("30 2 * * *", NOON, datetime(2024, 3, 2, 2, 30, tzinfo=UTC)),
        ("0 9 * * mon", NOON, datetime(2024, 3, 4, 9, 0, tzinfo=UTC)),  # 1 March 2024: a Friday
    ],
)
def test_cron_expressions(cron: str, last: datetime, expected: datetime) -> None:
    schedule = parse_schedule(cron)
    assert schedule.cron == cron and schedule.every is None
    assert schedule.next_after(last) == expected


def test_cron_is_evaluated_in_utc_whatever_the_moments_offset() -> None:
    # PostgreSQL hands timestamptz back in the server's time zone; 12:00 UTC is 17:30 in India.
    india = timezone(timedelta(hours=5, minutes=30))
    schedule = parse_schedule("0 3 * * *")
    expected = datetime(2024, 3, 2, 3, 0, tzinfo=UTC)
    assert schedule.next_after(NOON.astimezone(india)) == expected
    assert schedule.is_due(NOON.astimezone(india), expected)
    assert not schedule.is_due(NOON.astimezone(india), expected - timedelta(seconds=1))


@pytest.mark.parametrize("text", ["1m", "*/1 * * * *"])
def test_a_job_that_never_ran_is_due_now(text: str) -> None:
    assert parse_schedule(text).is_due(None, NOON)


@pytest.mark.parametrize(
    ("text", "next_time"),
    [("1m", NOON + timedelta(seconds=30)), ("* * * * *", NOON)],
)
def test_due_from_the_next_time_after_the_last_start(text: str, next_time: datetime) -> None:
    schedule = parse_schedule(text)
    last = NOON - timedelta(seconds=30)
    assert schedule.next_after(last) == next_time
    assert not schedule.is_due(last, last)
    assert not schedule.is_due(last, next_time - timedelta(milliseconds=1))
    assert schedule.is_due(last, next_time)
    assert schedule.is_due(last, next_time + timedelta(minutes=5))


@pytest.mark.parametrize("text", ["1m", "* * * * *"])
def test_missed_ticks_are_run_once_not_replayed(text: str) -> None:
    schedule = parse_schedule(text)
    # The scheduler was away for an hour: 60 ticks were missed, the job is due once...
    assert schedule.is_due(NOON - timedelta(hours=1), NOON)
    # ...and once it starts now, it is not due again until the next tick after now.
    started = NOON + timedelta(seconds=0.5)
    assert not schedule.is_due(started, started)
    assert not schedule.is_due(started, started + timedelta(seconds=58))
    assert schedule.is_due(started, started + timedelta(minutes=1))


@pytest.mark.parametrize(
    "text",
    [
        "",
        "5x",
        "m",
        "1.5m",
        "-1m",
        "5 m",
        "1M",
        "every minute",
        "61 * * * *",
        "* * *",
        "* * * * * *",  # seconds: not the 5-field cron the spec documents
        "@hourly",
        "0 0 31 2 *",  # 31 February never comes
    ],
)
def test_invalid_schedules_are_spec_errors(text: str) -> None:
    with pytest.raises(SpecError, match="not a schedule"):
        parse_schedule(text)
