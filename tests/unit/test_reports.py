"""The report query: days on the shop's clock become UTC bounds; values are checked by name."""

from __future__ import annotations

import datetime as dt
import zoneinfo

import pytest

from switch.domain.reports import PAGE_SIZE_DEFAULT, ReportQueryError, page_token, report_query

AMSTERDAM = zoneinfo.ZoneInfo("Europe/Amsterdam")


def utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


def test_a_day_is_counted_on_the_shops_clock_including_the_short_day_of_summer_time() -> None:
    winter = report_query("2026-01-15", default_zone=AMSTERDAM)
    assert (winter.since, winter.until) == (utc("2026-01-14T23:00"), utc("2026-01-15T23:00"))
    # The clocks go forward on 29 March 2026: that day has 23 hours.
    spring = report_query("2026-03-29", default_zone=AMSTERDAM)
    assert (spring.since, spring.until) == (utc("2026-03-28T23:00"), utc("2026-03-29T22:00"))
    in_utc = report_query("2026-03-29", "2026-03-30", "UTC", default_zone=AMSTERDAM)
    assert (in_utc.since, in_utc.until) == (utc("2026-03-29T00:00"), utc("2026-03-31T00:00"))


def test_defaults_and_repeated_values() -> None:
    query = report_query("2026-11-22", default_zone=AMSTERDAM, types=["load", "redemption", "load"])
    assert query.last_day == query.first_day == dt.date(2026, 11, 22)
    assert query.types == ("load", "redemption")
    assert (query.page_size, query.after, query.statuses) == (PAGE_SIZE_DEFAULT, 0, ())


def test_a_page_token_leads_to_the_page_after_it() -> None:
    assert page_token(0) == ""
    assert report_query("2026-11-22", default_zone=AMSTERDAM, page_token=page_token(417)).after == 417


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"from_date": ""}, "from_date is missing"),
        ({"from_date": "22-11-2026"}, "from_date '22-11-2026' is not a date"),
        ({"to_date": "2026-11-01"}, "to_date 2026-11-01 is before from_date 2026-11-22"),
        ({"to_date": "2027-12-31"}, "spans 405 days"),
        ({"time_zone": "Europe/Atlantis"}, "time_zone 'Europe/Atlantis' is not a known time zone"),
        ({"time_zone": "../../etc/passwd"}, "time_zone '../../etc/passwd'"),
        ({"types": ["redeem"]}, "types: 'redeem' is not one of cancel, load, payment"),
        ({"payment_methods": ["cash"]}, "payment_methods: 'cash' is not one of card, chip"),
        ({"statuses": ["pending"]}, "statuses: 'pending' is not one of aborted, approved"),
        ({"page_size": -1}, "page_size -1"),
        ({"page_size": 5_001}, "page_size 5001"),
        ({"page_token": "abc"}, "page_token 'abc' is not one this report gave"),
        ({"page_token": "0"}, "page_token '0'"),
        (
            {"from_date": "x" * 10_000},
            "from_date 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx...xxxxxxxxxxxxxxxxxxxx' is not",
        ),
    ],
)
def test_a_bad_value_is_refused_naming_its_field(fields: dict[str, object], named: str) -> None:
    values: dict[str, object] = {"from_date": "2026-11-22", **fields}
    with pytest.raises(ReportQueryError) as refused:
        report_query(default_zone=AMSTERDAM, **values)  # type: ignore[arg-type]
    assert named in str(refused.value)


def test_payout_cycles_start_on_mondays_counted_from_the_epoch() -> None:
    from switch.domain.programmes import payout_cycle_start, payout_settlement_id

    assert payout_cycle_start(dt.date(2024, 1, 1), 4) == dt.date(2024, 1, 1)
    assert payout_cycle_start(dt.date(2024, 1, 28), 4) == dt.date(2024, 1, 1)
    assert payout_cycle_start(dt.date(2024, 1, 29), 4) == dt.date(2024, 1, 29)
    assert payout_cycle_start(dt.date(2026, 11, 22), 1) == dt.date(2026, 11, 16)  # a Sunday
    assert payout_settlement_id(dt.date(2026, 11, 29), 4) == "payout-2026-11-02"
    assert payout_settlement_id(dt.date(2026, 11, 30), 4) == "payout-2026-11-30"
