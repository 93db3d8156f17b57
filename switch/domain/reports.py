"""The portal's transaction report: which days, in whose time zone, filtered by what.

A merchant looks at one day or a period of days, as the shop's clock counts them; the switch
stores UTC. A query holds the days and the zone, and gives the UTC bounds to search between.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Iterable
from dataclasses import dataclass

from switch.domain.quoting import quoted
from switch.domain.transactions import TransactionStatus, TransactionType

PAYMENT_METHODS = ("card", "chip", "contactless", "magstripe", "stored_value")
TYPES = tuple(sorted(t.value for t in TransactionType))
STATUSES = tuple(sorted(s.value for s in TransactionStatus))
DAYS_MAX = 366
PAGE_SIZE_DEFAULT = 500
PAGE_SIZE_MAX = 5_000
LOCATIONS_MAX = 100  # ticked in one report
DAY_FIRST = dt.date(1970, 1, 1)
DAY_LAST = dt.date(9999, 12, 30)


class ReportQueryError(ValueError):
    """A report request with a bad value; the message names the field and says why."""


@dataclass(frozen=True, slots=True)
class ReportQuery:
    first_day: dt.date
    last_day: dt.date  # inclusive
    zone: zoneinfo.ZoneInfo
    merchant_id: str = ""
    terminal_id: str = ""
    location_ids: tuple[str, ...] = ()  # empty: every location and sources that have none
    types: tuple[str, ...] = ()  # empty: every type; the same for methods and statuses
    payment_methods: tuple[str, ...] = ()
    statuses: tuple[str, ...] = ()
    page_size: int = PAGE_SIZE_DEFAULT
    after: int = 0  # the page starts after this stored transaction

    @property
    def since(self) -> dt.datetime:
        """The first day's midnight on the shop's clock, in UTC."""
        return midnight(self.first_day, self.zone)

    @property
    def until(self) -> dt.datetime:
        """The midnight after the last day, in UTC (excluded)."""
        return midnight(self.last_day + dt.timedelta(days=1), self.zone)


def report_query(
    from_date: str,
    to_date: str = "",
    time_zone: str = "",
    *,
    default_zone: zoneinfo.ZoneInfo,
    merchant_id: str = "",
    terminal_id: str = "",
    location_ids: Iterable[str] = (),
    types: Iterable[str] = (),
    payment_methods: Iterable[str] = (),
    statuses: Iterable[str] = (),
    page_size: int = 0,
    page_token: str = "",
) -> ReportQuery:
    """A query from a request's fields; ReportQueryError names the first bad one."""
    if not from_date:
        raise ReportQueryError("from_date is missing (YYYY-MM-DD, the first day of the report)")
    first_day = day_of("from_date", from_date)
    last_day = day_of("to_date", to_date) if to_date else first_day
    if last_day < first_day:
        raise ReportQueryError(f"to_date {last_day} is before from_date {first_day}")
    days = (last_day - first_day).days + 1
    if days > DAYS_MAX:
        raise ReportQueryError(f"from_date to to_date spans {days} days; at most {DAYS_MAX}")
    if page_size < 0 or page_size > PAGE_SIZE_MAX:
        raise ReportQueryError(
            f"page_size {page_size}: it must be between 1 and {PAGE_SIZE_MAX} (0: {PAGE_SIZE_DEFAULT})"
        )
    return ReportQuery(
        first_day,
        last_day,
        zone(time_zone) if time_zone else default_zone,
        merchant_id=merchant_id,
        terminal_id=terminal_id,
        location_ids=_location_ids(location_ids),
        types=_members("types", types, TYPES),
        payment_methods=_members("payment_methods", payment_methods, PAYMENT_METHODS),
        statuses=_members("statuses", statuses, STATUSES),
        page_size=page_size or PAGE_SIZE_DEFAULT,
        after=_after(page_token),
    )


def page_token(after: int) -> str:
    """The token that asks for the page after this stored transaction; empty when there is none."""
    return str(after) if after else ""


def day_of(field: str, value: str) -> dt.date:
    """A day given as YYYY-MM-DD, from DAY_FIRST to DAY_LAST (a day's bounds in any zone stay within
    what a datetime holds); ReportQueryError naming the field otherwise."""
    shaped = len(value) == 10 and value[4] == value[7] == "-"
    try:
        day = dt.date.fromisoformat(value) if shaped else None
    except ValueError:
        day = None
    if day is None:
        raise ReportQueryError(f"{field} {quoted(value)} is not a date (YYYY-MM-DD)")
    if not DAY_FIRST <= day <= DAY_LAST:
        raise ReportQueryError(f"{field} {value} is outside {DAY_FIRST} to {DAY_LAST}")
    return day


def zone(name: str) -> zoneinfo.ZoneInfo:
    try:
        return zoneinfo.ZoneInfo(name)
    # OSError: the name is read as a path under the zone database: a region's directory ("Europe")
    # or a name longer than a file name may be.
    except (ValueError, OSError, zoneinfo.ZoneInfoNotFoundError):
        raise ReportQueryError(
            f"time_zone {quoted(name)} is not a known time zone (like Europe/Amsterdam)"
        ) from None


def _members(field: str, values: Iterable[str], known: tuple[str, ...]) -> tuple[str, ...]:
    chosen = tuple(dict.fromkeys(values))
    for value in chosen:
        if value not in known:
            raise ReportQueryError(f"{field}: {quoted(value)} is not one of {', '.join(known)}")
    return chosen


def _location_ids(values: Iterable[str]) -> tuple[str, ...]:
    chosen = tuple(dict.fromkeys(values))
    if "" in chosen:
        raise ReportQueryError("location_ids: an empty id (ListLocations gives each location's id)")
    if len(chosen) > LOCATIONS_MAX:
        raise ReportQueryError(f"location_ids: {len(chosen)} locations; at most {LOCATIONS_MAX}")
    return chosen


def _after(token: str) -> int:
    if not token:
        return 0
    if not token.isascii() or not token.isdigit() or len(token) > 18 or int(token) == 0:
        raise ReportQueryError(f"page_token {quoted(token)} is not one this report gave")
    return int(token)


def midnight(day: dt.date, zone: zoneinfo.ZoneInfo) -> dt.datetime:
    """The day's first moment on the zone's clock, in UTC."""
    return dt.datetime.combine(day, dt.time(), zone).astimezone(dt.UTC)
