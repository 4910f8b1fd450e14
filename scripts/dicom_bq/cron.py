"""The unix-cron schedules Cloud Scheduler accepts, and when one fired last or fires next.

Pure and small on purpose (no croniter in the lock files). The subset is the one Google documents
in "Cron job format and time zone" (https://cloud.google.com/scheduler/docs/configuring/cron-job-schedules):
five fields, minute 0-59, hour 0-23, day of month 1-31, month 1-12 or JAN-DEC, day of week 0-6
or SUN-SAT or 7 for Sunday; `*`, lists `,`, ranges `-` and steps `/`; no `L`. When both day
fields are restricted a day matches either (inclusive OR); a day field that starts with `*` is
unrestricted, as in Vixie cron, the unix-cron Google's format is based on. Cloud Scheduler's
English-like schedules ("every 24 hours") are not cron and are refused here.

Time zones: a tz database name, "utc" for UTC, UTC when absent (cloudscheduler v1 discovery
document, Job.timeZone). Around daylight saving changes this module assumes that a wall time that
does not exist (spring forward) does not fire and that one that happens twice fires at its first
occurrence; Google does not document either, and both only ever make a fire time earlier or
skipped, never invent a later one.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterator
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dicom_bq.errors import DicomBqError
from dicom_bq.texts import excerpt

_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_DAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
# (name, lowest, highest, names for lowest..): day of week takes 7 as Sunday, folded to 0 below.
_FIELDS = (
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day of month", 1, 31, ()),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 7, _DAYS),
)
# A field's number: ASCII digits, few enough for any field (str.isdigit takes "²" and "٣").
_NUMBER = re.compile(r"[0-9]{1,4}")
# Long enough for the rarest schedule that fires at all: 29 February, 8 years apart at most.
_SEARCH_DAYS = 366 * 8 + 2
_HELP = (
    "a Cloud Scheduler unix-cron schedule is five fields, MINUTE HOUR DAY-OF-MONTH MONTH "
    'DAY-OF-WEEK, for example "0 2 * * *" (https://cloud.google.com/scheduler/docs/'
    "configuring/cron-job-schedules)"
)


@dataclass(frozen=True)
class CronSchedule:
    expression: str
    time_zone: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days_of_month: frozenset[int]
    months: frozenset[int]
    days_of_week: frozenset[int]  # 0 = Sunday
    any_day_of_month: bool
    any_day_of_week: bool

    @property
    def zone(self) -> datetime.tzinfo:
        return _zone(self.time_zone)

    def _day_matches(self, day: datetime.date) -> bool:
        if day.month not in self.months:
            return False
        in_month = day.day in self.days_of_month
        in_week = (day.isoweekday() % 7) in self.days_of_week
        if self.any_day_of_month or self.any_day_of_week:
            return in_month and in_week
        return in_month or in_week

    def previous_fire(self, at: datetime.datetime) -> datetime.datetime | None:
        """The last time at or before `at` (timezone-aware) the schedule fired, in UTC; None
        when it never fires in the eight years before `at`."""
        if at.tzinfo is None:
            raise ValueError("previous_fire needs a timezone-aware time")
        zone = self.zone
        local_today = at.astimezone(zone).date()
        for back in range(_SEARCH_DAYS):
            day = local_today - datetime.timedelta(days=back)
            if not self._day_matches(day):
                continue
            for hour in sorted(self.hours, reverse=True):
                for minute in sorted(self.minutes, reverse=True):
                    wall = datetime.datetime(day.year, day.month, day.day, hour, minute)
                    fire = _existing(wall, zone)
                    if fire is not None and fire <= at:
                        return fire.astimezone(datetime.UTC)
        return None

    def fires(
        self, *, after: datetime.datetime, until: datetime.datetime
    ) -> Iterator[datetime.datetime]:
        """Each time the schedule fires after `after` and at or before `until` (both
        timezone-aware), earliest first, in UTC."""
        if after.tzinfo is None or until.tzinfo is None:
            raise ValueError("fires needs timezone-aware times")
        zone = self.zone
        times = [(hour, minute) for hour in sorted(self.hours) for minute in sorted(self.minutes)]
        day = after.astimezone(zone).date()
        last = until.astimezone(zone).date()
        while day <= last:
            if self._day_matches(day):
                for hour, minute in times:
                    wall = datetime.datetime(day.year, day.month, day.day, hour, minute)
                    fire = _existing(wall, zone)
                    if fire is not None and after < fire <= until:
                        yield fire.astimezone(datetime.UTC)
            day += datetime.timedelta(days=1)

    def next_fire(self, after: datetime.datetime) -> datetime.datetime | None:
        """The first time after `after` (timezone-aware) the schedule fires, in UTC; None when
        it never fires in the eight years after `after`."""
        until = after + datetime.timedelta(days=_SEARCH_DAYS)
        return next(self.fires(after=after, until=until), None)


# A snapshot run is a dicomStores.export of the whole store with WRITE_TRUNCATE: a long-running
# operation, which Google returns "when method calls can take a substantial amount of time"
# (https://cloud.google.com/healthcare-api/docs/how-tos/dicom-export-bigquery, "Exporting DICOM
# metadata"; the page gives no duration, which grows with the store). Runs closer than an hour
# would start an export while the last one still writes the same table.
SNAPSHOT_MIN_INTERVAL = datetime.timedelta(hours=1)
# A schedule must fire within this long from now: one that does not never will, or fires on a
# date that only some years have.
SNAPSHOT_MAX_WAIT = datetime.timedelta(days=366)
_NIGHTLY = '"0 2 * * *" for nightly at 02:00'


def snapshot_schedule_problem(schedule: CronSchedule, *, now: datetime.datetime) -> str | None:
    """Why the schedule cannot drive the nightly snapshot, or None: it fires more often than once
    an hour, or not in the year after `now`."""
    previous: datetime.datetime | None = None
    for fire in schedule.fires(after=now, until=now + SNAPSHOT_MAX_WAIT):
        if previous is not None and fire - previous < SNAPSHOT_MIN_INTERVAL:
            gap = int((fire - previous).total_seconds() // 60)
            return (
                f"{excerpt(schedule.expression)} fires {gap} minute{'s' if gap != 1 else ''} "
                f"apart ({previous:%Y-%m-%d %H:%M} and {fire:%H:%M} UTC); each run exports the "
                "whole store (WRITE_TRUNCATE), a long-running operation that can take hours, so "
                f"runs would overlap: fire at most once an hour, such as {_NIGHTLY}"
            )
        previous = fire
    if previous is None:
        return (
            f"{excerpt(schedule.expression)} does not fire in the year after "
            f"{now:%Y-%m-%d} (a day that never comes, such as 31 February, or not every year, "
            "such as 29 February?): "
            f"write a schedule that does, such as {_NIGHTLY}"
        )
    return None


def _zone(name: str) -> datetime.tzinfo:
    if name.lower() == "utc":
        return datetime.UTC
    return ZoneInfo(name)


def _existing(wall: datetime.datetime, zone: datetime.tzinfo) -> datetime.datetime | None:
    """`wall` in `zone` (its first occurrence when it happens twice), or None when the clocks
    skip it."""
    aware = wall.replace(tzinfo=zone, fold=0)
    back = aware.astimezone(datetime.UTC).astimezone(zone).replace(tzinfo=None)
    return aware if back == wall else None


def parse_schedule(
    expression: str, time_zone: str | None = None, what: str = "schedule"
) -> CronSchedule:
    """A 5-field unix-cron expression and its time zone; DicomBqError naming the problem."""
    zone_name = time_zone or "UTC"
    try:
        _zone(zone_name)
    except (ZoneInfoNotFoundError, ValueError):
        raise DicomBqError(
            f"{what}: time zone {excerpt(zone_name)} is not in the tz database: use a name such "
            'as "Etc/UTC" or "Europe/Paris"'
        ) from None
    if not all(" " <= char <= "~" for char in expression) or expression != expression.strip():
        # str.split() would take a trailing newline or a tab for a separator, and int() reads
        # other scripts' digits ("٣" is 3): only printable ASCII, spaces between the fields.
        raise DicomBqError(
            f"{what} {excerpt(expression)} holds a character other than printable ASCII, or "
            f"spaces around it: {_HELP}"
        )
    fields = expression.split()
    if len(fields) != 5:
        raise DicomBqError(f"{what} {excerpt(expression)} has {len(fields)} fields: {_HELP}")
    values = []
    for text, (name, low, high, names) in zip(fields, _FIELDS, strict=True):
        try:
            values.append(_field(text, low, high, names))
        except ValueError as error:
            raise DicomBqError(
                f"{what} {excerpt(expression)}: the {name} field {excerpt(text)} {error}; {_HELP}"
            ) from None
    minutes, hours, days_of_month, months, days_of_week = values
    return CronSchedule(
        expression=expression,
        time_zone=zone_name,
        minutes=minutes,
        hours=hours,
        days_of_month=days_of_month,
        months=months,
        days_of_week=frozenset(d % 7 for d in days_of_week),
        any_day_of_month=fields[2].startswith("*"),
        any_day_of_week=fields[4].startswith("*"),
    )


def _value(text: str, low: int, high: int, names: tuple[str, ...]) -> int:
    if text.upper() in names:
        return low + names.index(text.upper())
    if not _NUMBER.fullmatch(text):
        raise ValueError(f"has {excerpt(text)}, not a number" + (" or a name" if names else ""))
    number = int(text)
    if not low <= number <= high:
        raise ValueError(f"has {number}, outside {low}-{high}")
    return number


def _field(text: str, low: int, high: int, names: tuple[str, ...]) -> frozenset[int]:
    chosen: set[int] = set()
    for item in text.split(","):
        span, slash, step_text = item.partition("/")
        step = 1
        if slash:
            if not _NUMBER.fullmatch(step_text) or int(step_text) == 0:
                raise ValueError(f"has step {excerpt(step_text)}: a step is a whole number > 0")
            step = int(step_text)
        if span == "*":
            first, last = low, high
        elif "-" in span:
            start, _, end = span.partition("-")
            first, last = _value(start, low, high, names), _value(end, low, high, names)
            if first > last:
                raise ValueError(f"has the range {excerpt(span)}, which runs backwards")
        else:
            first = _value(span, low, high, names)
            # "N/S" is N, N+S, ... up to the field's end, as in Vixie cron.
            last = high if slash else first
        chosen.update(range(first, last + 1, step))
    return frozenset(chosen)
