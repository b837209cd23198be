"""When a job is due: intervals (`30s`, `5m`, `2h`, `1d`) and cron expressions.

A job is due when the next time after its last start has come. A scheduler that was down
over several ticks therefore runs the job once when it comes back, not once per missed tick,
and the next time counts from that run.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from croniter import CroniterError, croniter

from refit.errors import SpecError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class Schedule:
    """An interval in seconds, or a cron expression (evaluated in UTC)."""

    text: str
    every: float | None = None
    cron: str | None = None

    def next_after(self, moment: datetime) -> datetime:
        if self.every is not None:
            return moment + timedelta(seconds=self.every)
        assert self.cron is not None
        # In UTC whatever the moment's offset: PostgreSQL returns times in its own time zone.
        utc = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
        nxt: datetime = croniter(self.cron, utc).get_next(datetime)
        return nxt

    def is_due(self, last_started: datetime | None, now: datetime) -> bool:
        return last_started is None or now >= self.next_after(last_started)


def parse_schedule(text: str) -> Schedule:
    text = text.strip()
    unit = text[-1:]
    if unit in _UNITS and text[:-1].isdigit():
        return Schedule(text, every=float(int(text[:-1]) * _UNITS[unit]))
    # Five fields, as the spec documents (croniter would also take seconds and @hourly), and
    # a time that comes (not 31 February), or the scheduler would fail at every tick.
    if len(text.split()) == 5 and croniter.is_valid(text):
        schedule = Schedule(text, cron=text)
        try:
            schedule.next_after(datetime(2000, 1, 1, tzinfo=UTC))
        except CroniterError:
            pass
        else:
            return schedule
    raise SpecError(f"not a schedule: {text!r}; expected 30s, 5m, 1h, 1d or a cron expression")
