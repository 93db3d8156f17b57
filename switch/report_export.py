"""The transaction report's CSV export: its columns, its two forms, and cells a spreadsheet will not run."""

from __future__ import annotations

import csv
import enum
import io
import re
import threading
import zoneinfo
from collections.abc import Iterable, Iterator

from switch.domain.money import Money
from switch.domain.quoting import quoted
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


class CsvDialect(enum.Enum):
    """How the export is written: for programs, or for a spreadsheet in the Netherlands and Belgium."""

    rfc4180 = "rfc4180"  # `,` between cells, 1234.56
    # Excel with Dutch or Belgian settings splits lines on `;` and reads 1234,56 as a number; the
    # UTF-8 byte order mark makes it read "Café" as UTF-8 rather than as the Windows code page.
    excel_nl = "excel-nl"


BYTE_ORDER_MARK = "\ufeff"


class ExportRefusedError(Exception):
    """An export the switch will not run now: the client may ask again later, or for less."""


class TooManyExportsError(ExportRefusedError):
    """As many exports are running as the switch allows at once."""


class ExportTooLargeError(ExportRefusedError):
    """The export is more than its spool may hold (export_spool_bytes_max)."""


class ExportSpoolFullError(ExportRefusedError):
    """The data directory has no room left for the export's spool (the disk or the quota is full)."""


class ExportFaultError(RuntimeError):
    """A fault while an export was spooled (its cause chained): a fault of ours, told as one.

    Spooling runs where the handlers turn a LookupError into NOT_FOUND with its text; a KeyError
    from a row the CSV cannot be written for must instead be INTERNAL with a logged reference.
    """


class ExportSlots:
    """At most `concurrent_max` exports at once: each holds a connection and a read snapshot while
    it is spooled, then its spool (up to export_spool_bytes_max of disk) while it streams."""

    def __init__(self, concurrent_max: int) -> None:
        assert concurrent_max >= 1, concurrent_max
        self._concurrent_max = concurrent_max
        self._free = threading.BoundedSemaphore(concurrent_max)

    def take_nowait(self) -> None:
        if not self._free.acquire(blocking=False):
            raise TooManyExportsError(
                f"{self._concurrent_max} exports are running, as many as the switch allows at once; "
                "try again when one has finished"
            )

    def give_back(self) -> None:
        self._free.release()


def dialect_named(name: str) -> CsvDialect:
    """The dialect of that name; ValueError naming the ones there are."""
    try:
        return CsvDialect(name)
    except ValueError:
        known = ", ".join(sorted(d.value for d in CsvDialect))
        raise ValueError(f"dialect {quoted(name)} is not one of {known}") from None


# A cell starting with one of these is run as a formula by the spreadsheet the export is opened in.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


# A spreadsheet set to the other dialect's separator (a Dutch Excel opening the operator's RFC 4180
# export splits on `;`) splits a cell there, and at a line break in it: the quotes that keep them in
# the cell are in the middle of what it reads as a cell. What follows each is guarded as well.
_SPLIT_ELSEWHERE = {
    CsvDialect.rfc4180: re.compile(r"([;\r\n])(?=[=+\-@\t\r])"),
    CsvDialect.excel_nl: re.compile(r"([,\r\n])(?=[=+\-@\t\r])"),
}


# Where _SPLIT_ELSEWHERE may match: a cell holding none of them (almost every one) is not searched,
# as searching every cell was about a third of an export's CPU.
_SPLITS_AT = {CsvDialect.rfc4180: (";", "\r", "\n"), CsvDialect.excel_nl: (",", "\r", "\n")}


def spreadsheet_text(cell: str, dialect: CsvDialect = CsvDialect.rfc4180) -> str:
    """Text that merchants and terminals choose (ids, device and location names) as text: a leading
    apostrophe keeps a spreadsheet from running "=HYPERLINK(...)" from a transaction id."""
    separator, carriage_return, line_feed = _SPLITS_AT[dialect]
    if separator in cell or carriage_return in cell or line_feed in cell:
        cell = _SPLIT_ELSEWHERE[dialect].sub(r"\1'", cell)
    return f"'{cell}" if cell.startswith(FORMULA_STARTS) else cell


def header(dialect: CsvDialect = CsvDialect.rfc4180) -> bytes:
    """The first line, after the byte order mark where the dialect has one."""
    mark = BYTE_ORDER_MARK if dialect is CsvDialect.excel_nl else ""
    return mark.encode() + _lines([COLUMNS], dialect)


def rows(
    page: Iterable[ReportedTransaction], zone: zoneinfo.ZoneInfo, dialect: CsvDialect = CsvDialect.rfc4180
) -> bytes:
    """The page's transactions as CSV lines (amounts in major units), times on the zone's clock."""
    return _lines((_cells(t, zone, dialect) for t in page), dialect)


def chunks(
    page: Iterable[ReportedTransaction],
    zone: zoneinfo.ZoneInfo,
    dialect: CsvDialect,
    chunk_bytes_max: int,
    before: bytes = b"",
) -> Iterator[bytes]:
    """The page's CSV lines (after `before`, the header on the first page) in chunks of at most
    chunk_bytes_max bytes, cut between lines: a page of 5,000 long rows is some 6 MB, over the 4 MB
    a gRPC client takes in one message by default. A line longer than the limit is a chunk alone."""
    assert chunk_bytes_max > 0, chunk_bytes_max
    out = io.StringIO()
    writer = csv.writer(out, delimiter=";" if dialect is CsvDialect.excel_nl else ",")
    pending, pending_bytes = [before], len(before)
    for transaction in page:
        writer.writerow(_cells(transaction, zone, dialect))
        line = out.getvalue().encode()
        out.seek(0)
        out.truncate()
        if pending_bytes and pending_bytes + len(line) > chunk_bytes_max:
            yield b"".join(pending)
            pending, pending_bytes = [], 0
        pending.append(line)
        pending_bytes += len(line)
    if pending_bytes:
        yield b"".join(pending)


def _cells(t: ReportedTransaction, zone: zoneinfo.ZoneInfo, dialect: CsvDialect) -> tuple[str, ...]:
    text = (
        t.source,
        t.device_name,
        t.location_name,
        t.merchant_id,
        t.transaction_id,
        t.transaction_type,
        t.payment_method,
        t.status,
    )
    text_after_amounts = (t.card_masked, t.authorization_code, t.original_transaction_id)
    return (
        t.created_at.astimezone(zone).isoformat(timespec="seconds"),
        *(spreadsheet_text(cell, dialect) for cell in text),
        ResponseCode[t.result].iso_code,
        t.currency,
        # Amounts are numbers the switch writes, never guarded: "'-5.00" would be text to Excel.
        _amount(t.requested_minor, t.currency, dialect),
        _amount(t.approved_minor, t.currency, dialect),
        *(spreadsheet_text(cell, dialect) for cell in text_after_amounts),
        str(t.period_number),
    )


def _amount(amount_minor: int, currency: str, dialect: CsvDialect) -> str:
    shown = Money(amount_minor, currency).decimal()
    return shown.replace(".", ",") if dialect is CsvDialect.excel_nl else shown


def _lines(cells: Iterable[Iterable[str]], dialect: CsvDialect) -> bytes:
    out = io.StringIO()
    csv.writer(out, delimiter=";" if dialect is CsvDialect.excel_nl else ",").writerows(cells)
    return out.getvalue().encode()
