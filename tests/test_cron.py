"""The unix-cron subset Cloud Scheduler accepts, and the previous fire time
(https://cloud.google.com/scheduler/docs/configuring/cron-job-schedules)."""

from __future__ import annotations

import datetime

import pytest

from dicom_bq.cron import parse_schedule
from dicom_bq.errors import DicomBqError


def utc(*parts: int) -> datetime.datetime:
    return datetime.datetime(*parts, tzinfo=datetime.UTC)


@pytest.mark.parametrize(
    ("schedule", "zone", "at", "fired"),
    [
        ("0 2 * * *", None, utc(2026, 11, 30, 7, 0), utc(2026, 11, 30, 2, 0)),
        ("0 2 * * *", "Etc/UTC", utc(2026, 11, 30, 1, 59), utc(2026, 11, 29, 2, 0)),
        ("0 2 * * *", "utc", utc(2026, 11, 30, 2, 0), utc(2026, 11, 30, 2, 0)),
        # 02:00 in Paris is 00:00 UTC in summer time (CEST, +2).
        ("0 2 * * *", "Europe/Paris", utc(2026, 7, 1, 0, 30), utc(2026, 7, 1, 0, 0)),
        ("*/15 * * * *", None, utc(2026, 11, 30, 10, 7), utc(2026, 11, 30, 10, 0)),
        ("5/20 * * * *", None, utc(2026, 11, 30, 10, 50), utc(2026, 11, 30, 10, 45)),
        ("10-30/10 3 * * *", None, utc(2026, 11, 30, 3, 29), utc(2026, 11, 30, 3, 20)),
        ("0 4,16 * * *", None, utc(2026, 11, 30, 15, 0), utc(2026, 11, 30, 4, 0)),
        # 29 February: the last one before 2027 is in 2024.
        ("0 0 29 2 *", None, utc(2027, 1, 1), utc(2024, 2, 29)),
    ],
)
def test_previous_fire(
    schedule: str, zone: str | None, at: datetime.datetime, fired: datetime.datetime
) -> None:
    assert parse_schedule(schedule, zone).previous_fire(at) == fired


def test_both_day_fields_restricted_match_either_day() -> None:
    # "0 0 1 * MON": the 1st of the month OR any Monday (Google's inclusive OR).
    schedule = parse_schedule("0 0 1 * MON")
    assert schedule.previous_fire(utc(2026, 12, 3, 12)) == utc(2026, 12, 1)  # a Tuesday
    assert schedule.previous_fire(utc(2026, 11, 30, 12)) == utc(2026, 11, 30)  # a Monday


def test_a_day_field_starting_with_a_star_is_unrestricted() -> None:
    # "*/2" is unrestricted as in Vixie cron: odd days that are Mondays (30 Nov is even).
    schedule = parse_schedule("0 0 */2 * MON")
    assert schedule.previous_fire(utc(2026, 12, 2)) == utc(2026, 11, 23)


def test_names_and_seven_for_sunday() -> None:
    at = utc(2026, 4, 15)
    named = parse_schedule("0 12 * JAN-MAR SUN").previous_fire(at)
    numbered = parse_schedule("0 12 * 1-3 7").previous_fire(at)
    assert named == numbered == utc(2026, 3, 29, 12)


def test_a_wall_time_skipped_by_daylight_saving_does_not_fire() -> None:
    # Paris skips 02:00-03:00 on 29 March 2026: the last 02:30 is the day before (01:30 UTC).
    schedule = parse_schedule("30 2 * * *", "Europe/Paris")
    assert schedule.previous_fire(utc(2026, 3, 29, 12)) == utc(2026, 3, 28, 1, 30)


def test_a_wall_time_repeated_by_daylight_saving_fires_at_its_first_occurrence() -> None:
    # 02:30 happens twice in Paris on 25 October 2026: first in summer time, 00:30 UTC.
    schedule = parse_schedule("30 2 * * *", "Europe/Paris")
    assert schedule.previous_fire(utc(2026, 10, 25, 12)) == utc(2026, 10, 25, 0, 30)


def test_a_schedule_that_never_fires_has_no_previous_fire() -> None:
    assert parse_schedule("0 0 31 2 *").previous_fire(utc(2026, 11, 30)) is None


@pytest.mark.parametrize(
    ("schedule", "zone", "said"),
    [
        ("0 2 * *", None, "has 4 fields"),
        ("every 24 hours", None, "has 3 fields"),
        ("60 * * * *", None, "minute field '60' has 60, outside 0-59"),
        ("0 24 * * *", None, "hour field"),
        ("0 0 0 * *", None, "day of month field '0' has 0, outside 1-31"),
        ("0 0 L * *", None, "day of month field 'L' has 'L', not a number"),
        ("0 0 * 13 *", None, "month field"),
        ("0 0 * * 8", None, "day of week field"),
        ("5-1 * * * *", None, "runs backwards"),
        ("*/0 * * * *", None, "a step is a whole number > 0"),
        ("1,,2 * * * *", None, "not a number"),
        ("0 2 * * *", "Mars/Olympus", "time zone 'Mars/Olympus' is not in the tz database"),
    ],
)
def test_what_cloud_scheduler_would_refuse_is_bad_input(
    schedule: str, zone: str | None, said: str
) -> None:
    with pytest.raises(DicomBqError) as raised:
        parse_schedule(schedule, zone)
    assert said in raised.value.message
    assert raised.value.exit_code == 2
