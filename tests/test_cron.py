"""The unix-cron subset Cloud Scheduler accepts, the previous and next fire times, and which
schedules can drive the snapshot
(https://cloud.google.com/scheduler/docs/configuring/cron-job-schedules)."""

from __future__ import annotations

import datetime
import itertools

import pytest

from dicom_bq.cron import parse_schedule, snapshot_schedule_problem
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


@pytest.mark.parametrize(
    ("schedule", "zone", "after", "fires"),
    [
        ("0 2 * * *", None, utc(2026, 11, 30, 2, 0), utc(2026, 12, 1, 2, 0)),
        ("0 2 * * *", None, utc(2026, 11, 30, 1, 59), utc(2026, 11, 30, 2, 0)),
        ("*/15 * * * *", None, utc(2026, 11, 30, 10, 7), utc(2026, 11, 30, 10, 15)),
        # 02:00 in Paris is 01:00 UTC in winter (CET, +1).
        ("0 2 * * *", "Europe/Paris", utc(2026, 11, 30, 8), utc(2026, 12, 1, 1, 0)),
        ("0 0 29 2 *", None, utc(2026, 11, 30), utc(2028, 2, 29)),
        # Paris skips 02:00-03:00 on 28 March 2027: the next 02:30 is the day after (00:30 UTC).
        ("30 2 * * *", "Europe/Paris", utc(2027, 3, 27, 12), utc(2027, 3, 29, 0, 30)),
    ],
)
def test_next_fire(
    schedule: str, zone: str | None, after: datetime.datetime, fires: datetime.datetime
) -> None:
    assert parse_schedule(schedule, zone).next_fire(after) == fires


def test_a_schedule_that_never_fires_has_no_next_fire() -> None:
    assert parse_schedule("0 0 31 2 *").next_fire(utc(2026, 11, 30)) is None


def test_fires_lists_every_fire_in_order_and_next_and_previous_agree() -> None:
    schedule = parse_schedule("0 4,16 * * MON", "Europe/Paris")
    fires = list(schedule.fires(after=utc(2026, 11, 29), until=utc(2026, 12, 8)))
    assert fires == [
        utc(2026, 11, 30, 3),
        utc(2026, 11, 30, 15),
        utc(2026, 12, 7, 3),
        utc(2026, 12, 7, 15),
    ]
    for earlier, later in itertools.pairwise(fires):
        assert schedule.next_fire(earlier) == later
        assert schedule.previous_fire(later - datetime.timedelta(seconds=1)) == earlier


NOW = utc(2026, 11, 30, 8)


@pytest.mark.parametrize(
    ("schedule", "zone"),
    [
        ("0 2 * * *", None),
        ("0 * * * *", "Europe/Paris"),  # hourly: one an hour apart, even around DST
        ("30 1 * * 1-5", "Europe/Berlin"),
        ("0 3 1 * *", None),
    ],
)
def test_a_schedule_at_most_hourly_that_fires_within_a_year_drives_the_snapshot(
    schedule: str, zone: str | None
) -> None:
    assert snapshot_schedule_problem(parse_schedule(schedule, zone), now=NOW) is None


@pytest.mark.parametrize(
    ("schedule", "zone", "now", "said"),
    [
        ("* * * * *", None, NOW, "fires 1 minute apart"),
        ("0,30 2 * * *", None, NOW, "fires 30 minutes apart"),
        ("*/5 2 * * *", None, NOW, "fires 5 minutes apart"),
        # Lord Howe Island moves its clocks by 30 minutes: on 3 October 2027 01:45 and 02:45
        # are 30 minutes apart (the spring-forward skips 02:00-02:30).
        ("45 1,2 * * *", "Australia/Lord_Howe", NOW, "fires 30 minutes apart"),
        ("0 2 31 2 *", None, NOW, "does not fire in the year after 2026-11-30"),
        ("0 2 30 2 *", None, NOW, "such as 31 February"),
        ("0 0 29 2 *", None, NOW, "not every year, such as 29 February"),
    ],
)
def test_a_schedule_too_frequent_or_that_never_fires_is_refused_saying_what_to_write(
    schedule: str, zone: str | None, now: datetime.datetime, said: str
) -> None:
    problem = snapshot_schedule_problem(parse_schedule(schedule, zone), now=now)
    assert problem is not None
    assert said in problem
    assert '"0 2 * * *" for nightly at 02:00' in problem


def test_29_february_drives_the_snapshot_only_within_a_year_of_one() -> None:
    schedule = parse_schedule("0 0 29 2 *")
    assert snapshot_schedule_problem(schedule, now=utc(2027, 3, 1)) is None
    assert snapshot_schedule_problem(schedule, now=utc(2028, 3, 1)) is not None
