"""What a schedule means: an interval (`30s`, `5m`, `2h`, `1d`) or a 5-field cron expression.

`parse_schedule` is the one grammar: the spec validates `schedule.*` with it, and the
scheduler runs what it returns, so a schedule the spec accepts is one the scheduler can run.
A job is due when the next time after its last start has come. A scheduler that was down
over several ticks therefore runs the job once when it comes back, not once per missed tick,
and the next time counts from that run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

EXPECTED = "expected an interval such as 30s, 5m, 1h, 1d or a 5-field cron expression"
_INTERVAL = re.compile(r"^([1-9][0-9]*)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_FIELDS = "minute hour day-of-month month day-of-week, in UTC"


@dataclass(frozen=True)
class Schedule:
    """An interval in seconds, or a cron expression (evaluated in UTC)."""

    text: str
    every: float | None = None
    cron: str | None = None

    def next_after(self, moment: datetime) -> datetime:
        if self.every is not None:
            return moment + timedelta(seconds=self.every)
        from croniter import croniter  # only for cron schedules: it costs ~0.1 s to import

        assert self.cron is not None
        # In UTC whatever the moment's offset: PostgreSQL returns times in its own time zone.
        utc = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
        nxt: datetime = croniter(self.cron, utc).get_next(datetime)
        return nxt

    def is_due(self, last_started: datetime | None, now: datetime) -> bool:
        return last_started is None or now >= self.next_after(last_started)

    def next_run(self, last_started: datetime | None, now: datetime) -> datetime:
        """When the job runs next: `now` if it never ran, else the next time after its last
        start (in the past when a scheduler is late)."""
        return now if last_started is None else self.next_after(last_started)


def parse_schedule(text: str) -> Schedule:
    """The schedule a text means; a `ValueError` saying what is expected if it means none."""
    text = text.strip()
    if match := _INTERVAL.match(text):
        return Schedule(text, every=float(int(match[1]) * _UNITS[match[2]]))
    # Five fields, as documented (croniter would also take seconds and @hourly).
    if len(text.split()) != 5:
        raise ValueError(EXPECTED)
    from croniter import CroniterBadCronError, CroniterError

    schedule = Schedule(text, cron=text)
    try:
        schedule.next_after(datetime(2000, 1, 1, tzinfo=UTC))
    except CroniterBadCronError as exc:
        problem = (
            "a field is out of range" if "out of range" in str(exc) else "a field is not valid"
        )
        raise ValueError(f"{EXPECTED} ({_FIELDS}): {problem}") from None
    except CroniterError:
        # A day that never comes (31 February): the scheduler would fail at every tick.
        raise ValueError(f"{EXPECTED}: this one matches no date (such as 31 February)") from None
    return schedule


def parse_duration(text: str) -> float:
    """The seconds a duration (`30s`, `5m`, `1h`, `7d`: an interval's grammar) means; a
    `ValueError` saying what is expected if it means none."""
    match = _INTERVAL.match(text.strip())
    if match is None:
        raise ValueError("expected a duration such as 30s, 5m, 1h or 7d")
    return float(int(match[1]) * _UNITS[match[2]])


# Intervals a cron expression keeps exactly, in minutes: those that divide an hour or a day.


def cron_expression(text: str) -> str:
    """A schedule as a Kubernetes CronJob's `schedule`; ValueError if no cron runs as often.

    A cron expression stays as it is (both are evaluated in UTC). An interval becomes the
    cron expression that runs as often when there is one: `5m` is `*/5 * * * *`, `2h` is
    `0 */2 * * *`, `1d` is `0 0 * * *`. An interval under a minute runs every minute, the
    most often a CronJob runs. Another interval (`7m`, `90m`, `2d`) is refused rather than
    changed: a cron expression says what the user wants.
    """
    schedule = parse_schedule(text)
    if schedule.cron is not None:
        return schedule.cron
    assert schedule.every is not None
    seconds = int(schedule.every)
    if seconds < 60:
        return "* * * * *"
    minutes, rest = divmod(seconds, 60)
    if rest == 0 and minutes < 60 and 60 % minutes == 0:
        return "* * * * *" if minutes == 1 else f"*/{minutes} * * * *"
    hours, rest = divmod(seconds, 3600)
    if rest == 0 and hours < 24 and 24 % hours == 0:
        return "0 * * * *" if hours == 1 else f"0 */{hours} * * *"
    if seconds == 86400:
        return "0 0 * * *"
    raise ValueError(
        "a CronJob runs on clock times: expected an interval that divides an hour (1m to "
        "30m) or a day (1h to 12h, 1d), or a 5-field cron expression"
    )
