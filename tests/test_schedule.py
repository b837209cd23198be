"""When a job is due: intervals, cron expressions in UTC, and no replay of missed ticks."""

import re
from datetime import UTC, datetime, timedelta, timezone

import pytest

from refit.schedule import EXPECTED, parse_duration, parse_schedule

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
    ("text", "problem"),
    [
        ("", EXPECTED),
        ("5x", EXPECTED),
        ("m", EXPECTED),
        ("0s", EXPECTED),  # never waiting is no interval
        ("1.5m", EXPECTED),
        ("-1m", EXPECTED),
        ("5 m", EXPECTED),
        ("1M", EXPECTED),
        ("every minute", EXPECTED),
        ("* * *", EXPECTED),
        ("* * * * * *", EXPECTED),  # seconds: not the 5-field cron the spec documents
        ("@hourly", EXPECTED),
        ("61 * * * *", f"{EXPECTED} (minute hour day-of-month month day-of-week, in UTC): "),
        ("99 99 99 99 99", "a field is out of range"),
        ("* * * * someday", "a field is not valid"),
        ("0 0 31 2 *", f"{EXPECTED}: this one matches no date (such as 31 February)"),
        ("0 0 30 2 *", "matches no date"),
    ],
)
def test_what_is_no_schedule_says_what_is_expected(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=re.escape(problem)) as raised:
        parse_schedule(text)
    assert str(raised.value).startswith(EXPECTED)


def test_29_february_comes_round() -> None:
    schedule = parse_schedule("0 0 29 2 *")
    assert schedule.next_after(NOON) == datetime(2028, 2, 29, tzinfo=UTC)


@pytest.mark.parametrize(("text", "seconds"), [("30s", 30), ("5m", 300), ("7d", 604800)])
def test_a_duration_has_the_grammar_of_an_interval(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["0s", "5 minutes", "*/5 * * * *", ""])
def test_anything_else_is_no_duration(text: str) -> None:
    with pytest.raises(ValueError, match="expected a duration"):
        parse_duration(text)
