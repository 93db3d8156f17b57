"""The date in the report zone, read once until the zone's next midnight: it turns at the midnight,
on the days the clocks change too, and goes back with a clock set back, as reading it each time does."""

from __future__ import annotations

import datetime as dt
import zoneinfo

import pytest

from switch.core import ZoneDate

# (zone, a UTC day whose local midnights and clock changes the readings cross)
ZONE_DAYS: list[tuple[str, dt.datetime]] = [
    ("UTC", dt.datetime(2026, 12, 7, tzinfo=dt.UTC)),
    ("Europe/Amsterdam", dt.datetime(2026, 12, 7, tzinfo=dt.UTC)),
    ("Europe/Amsterdam", dt.datetime(2026, 3, 29, tzinfo=dt.UTC)),  # spring change at 02:00
    ("Europe/Amsterdam", dt.datetime(2026, 10, 25, tzinfo=dt.UTC)),  # autumn change at 03:00
    ("America/Santiago", dt.datetime(2024, 4, 7, tzinfo=dt.UTC)),  # autumn: 24:00 back to 23:00
    ("America/Santiago", dt.datetime(2024, 9, 8, tzinfo=dt.UTC)),  # spring: midnight skipped
    ("America/Goose_Bay", dt.datetime(2009, 11, 1, tzinfo=dt.UTC)),  # 00:01 back to 23:01
    ("Asia/Kolkata", dt.datetime(2026, 12, 7, tzinfo=dt.UTC)),  # midnight at 18:30 UTC
    ("Australia/Lord_Howe", dt.datetime(2026, 4, 5, tzinfo=dt.UTC)),  # a half-hour change
    ("Pacific/Kiritimati", dt.datetime(2026, 12, 7, tzinfo=dt.UTC)),  # +14
]
READING_STEP_S = 7 * 60 + 30


def readings_s(start: dt.datetime) -> list[float]:
    """Every step across two days from start, with each whole hour and half hour and the
    millisecond before it (local midnights fall on one in every zone above), and a clock set back."""
    start_s = start.timestamp()
    steps = [start_s + step * READING_STEP_S for step in range(2 * 86_400 // READING_STEP_S)]
    turns = [start_s + half_hour * 1800 for half_hour in range(2 * 48)]
    forward = sorted(steps + turns + [turn - 0.001 for turn in turns])
    return forward + forward[::-7]


@pytest.mark.parametrize(("zone_name", "start"), ZONE_DAYS)
def test_zone_date_is_the_date_read_each_time(zone_name: str, start: dt.datetime) -> None:
    zone = zoneinfo.ZoneInfo(zone_name)
    now_s = start.timestamp()
    dates = ZoneDate(zone, clock=lambda: now_s)
    seen = set()
    for now_s in readings_s(start):  # the clock reads it
        expected = dt.datetime.fromtimestamp(now_s, dt.UTC).astimezone(zone).date()
        assert dates.today() == expected, dt.datetime.fromtimestamp(now_s, zone)
        seen.add(expected)
    assert len(seen) >= 2  # the readings crossed a midnight


def test_zone_date_turns_at_the_midnight() -> None:
    zone = zoneinfo.ZoneInfo("Europe/Amsterdam")
    midnight_s = dt.datetime(2026, 12, 8, tzinfo=zone).timestamp()
    now_s = midnight_s - 3600
    dates = ZoneDate(zone, clock=lambda: now_s)
    assert dates.today() == dt.date(2026, 12, 7)
    now_s = midnight_s - 1e-6
    assert dates.today() == dt.date(2026, 12, 7)
    now_s = midnight_s
    assert dates.today() == dt.date(2026, 12, 8)
    now_s = midnight_s - 1e-6  # the clock set back
    assert dates.today() == dt.date(2026, 12, 7)
