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


# Intervals a cron expression keeps exactly, in minutes: those that divide an hour or a day.
_CRON_MINUTES = (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30)
_CRON_HOURS = (1, 2, 3, 4, 6, 8, 12, 24)


def cron_expression(text: str) -> str:
    """A schedule as a Kubernetes CronJob's `schedule`: a cron expression as it is; an interval
    as the shortest one cron keeps exactly that is at least as long (`5s` and `1m` run every
    minute, the most a CronJob runs; `7m` every 10 minutes; `5h` every 6 hours); a `ValueError`
    for an interval longer than a day, which no cron expression repeats evenly.
    """
    schedule = parse_schedule(text)
    if schedule.cron is not None:
        return schedule.cron
    assert schedule.every is not None
    minutes = -(-int(schedule.every) // 60)
    if minutes == 1:
        return "* * * * *"
    for step in _CRON_MINUTES:
        if step >= minutes:
            return f"*/{step} * * * *"
    for hours in _CRON_HOURS:
        if hours * 60 >= minutes:
            return (
                "0 * * * *" if hours == 1 else "0 0 * * *" if hours == 24 else f"0 */{hours} * * *"
            )
    raise ValueError(
        f"{schedule.text} is longer than a day, which a cron expression cannot repeat evenly: "
        "give a 5-field cron expression such as '0 3 */2 * *'"
    )
