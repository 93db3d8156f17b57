"""The transaction report's CSV export: its columns, and cells a spreadsheet will not run."""

from __future__ import annotations

import csv
import io
import zoneinfo
from collections.abc import Iterable

from switch.domain.money import Money
from switch.domain.response_codes import ResponseCode
from switch.store.reports import ReportedTransaction

COLUMNS = (
    "time",
    "terminal_id",
    "device_name",
    "location_name",
    "merchant_id",
    "transaction_id",
    "transaction_type",
    "payment_method",
    "status",
    "response_code",
    "currency",
    "requested",
    "approved",
    "card_masked",
    "authorization_code",
    "original_transaction_id",
    "period_number",
)

# A cell starting with one of these is run as a formula by the spreadsheet the export is opened in.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_text(cell: str) -> str:
    """Text that merchants and terminals choose (ids, device and location names) as text: a leading
    apostrophe keeps a spreadsheet from running "=HYPERLINK(...)" from a transaction id."""
    return f"'{cell}" if cell.startswith(FORMULA_STARTS) else cell


def header() -> bytes:
    return _lines([COLUMNS])


def rows(page: Iterable[ReportedTransaction], zone: zoneinfo.ZoneInfo) -> bytes:
    """The page's transactions as CSV lines (amounts in major units), times on the zone's clock."""
    return _lines(_cells(t, zone) for t in page)


def _cells(t: ReportedTransaction, zone: zoneinfo.ZoneInfo) -> tuple[str, ...]:
    return tuple(
        spreadsheet_text(cell)
        for cell in (
            t.created_at.astimezone(zone).isoformat(timespec="seconds"),
            t.source,
            t.device_name,
            t.location_name,
            t.merchant_id,
            t.transaction_id,
            t.transaction_type,
            t.payment_method,
            t.status,
            ResponseCode[t.result].iso_code,
            t.currency,
            Money(t.requested_minor, t.currency).decimal(),
            Money(t.approved_minor, t.currency).decimal(),
            t.card_masked,
            t.authorization_code,
            t.original_transaction_id,
            str(t.period_number),
        )
    )


def _lines(cells: Iterable[Iterable[str]]) -> bytes:
    out = io.StringIO()
    csv.writer(out).writerows(cells)
    return out.getvalue().encode()
