"""The CSV export's lines, parsed back as a spreadsheet reads them: for programs (RFC 4180: `,` and
1234.56) and for Excel in the Netherlands and Belgium (`;`, 1234,56, a UTF-8 byte order mark)."""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
import zoneinfo

import pytest

from switch import report_export
from switch.report_export import CsvDialect
from switch.store.reports import ReportedTransaction

AMSTERDAM = zoneinfo.ZoneInfo("Europe/Amsterdam")


def transaction(**changes: object) -> ReportedTransaction:
    fields: dict[str, object] = {
        "transaction_id": "t-1",
        "source": "trm_1",
        "device_name": "A77 kassa",
        "location_id": "loc_1",
        "location_name": "Café Zoë; Noord",
        "merchant_id": "mer_1",
        "created_at": dt.datetime(2026, 12, 7, 9, 30, tzinfo=dt.UTC),
        "transaction_type": "redemption",
        "payment_method": "stored_value",
        "status": "approved",
        "result": "approved",
        "currency": "EUR",
        "requested_minor": 123_456,
        "approved_minor": 123_456,
        "card_masked": "600101******0067",
        "authorization_code": "396449",
        "original_transaction_id": "",
        "period_number": 3,
    }
    fields.update(changes)
    return ReportedTransaction(**fields)  # type: ignore[arg-type]


def parsed(dialect: CsvDialect, *page: ReportedTransaction) -> list[dict[str, str]]:
    data = report_export.header(dialect) + report_export.rows(page, AMSTERDAM, dialect)
    delimiter = ";" if dialect is CsvDialect.excel_nl else ","
    return list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"), newline=""), delimiter=delimiter))


@pytest.mark.parametrize(
    ("dialect", "changes", "column", "cell"),
    [
        (CsvDialect.rfc4180, {}, "approved", "1234.56"),
        (CsvDialect.excel_nl, {}, "approved", "1234,56"),
        (CsvDialect.excel_nl, {"approved_minor": 5}, "approved", "0,05"),
        # A negative amount is a number, not a formula to guard: no apostrophe before it.
        (CsvDialect.rfc4180, {"approved_minor": -500}, "approved", "-5.00"),
        (CsvDialect.excel_nl, {"approved_minor": -500}, "approved", "-5,00"),
        (CsvDialect.excel_nl, {"requested_minor": -1}, "requested", "-0,01"),
        (CsvDialect.excel_nl, {"currency": "JPY", "approved_minor": -1200}, "approved", "-1200"),
        # Text a merchant or terminal chooses is never run as a formula, in either form.
        (CsvDialect.rfc4180, {"transaction_id": "=1+2"}, "transaction_id", "'=1+2"),
        (CsvDialect.excel_nl, {"transaction_id": "-5,00"}, "transaction_id", "'-5,00"),
        (CsvDialect.excel_nl, {"device_name": "+31 20"}, "device_name", "'+31 20"),
        (CsvDialect.excel_nl, {"location_name": "@SUM(A1:A9)"}, "location_name", "'@SUM(A1:A9)"),
        (CsvDialect.excel_nl, {"original_transaction_id": "\t=1"}, "original_transaction_id", "'\t=1"),
        # A delimiter, a quote or a line break inside a cell stays inside it; accents survive.
        (CsvDialect.excel_nl, {}, "location_name", "Café Zoë; Noord"),
        (CsvDialect.rfc4180, {"device_name": 'kassa "1",\r\nvoor'}, "device_name", 'kassa "1",\r\nvoor'),
        (CsvDialect.excel_nl, {}, "time", "2026-12-07T10:30:00+01:00"),
    ],
)
def test_cells_read_back_as_written(
    dialect: CsvDialect, changes: dict[str, object], column: str, cell: str
) -> None:
    (row,) = parsed(dialect, transaction(**changes))
    assert row[column] == cell


@pytest.mark.parametrize(
    ("dialect", "starts_with_bom", "first_line"),
    [
        (CsvDialect.rfc4180, False, b"time,terminal_id,"),
        (CsvDialect.excel_nl, True, b"time;terminal_id;"),
    ],
)
def test_the_header_line(dialect: CsvDialect, starts_with_bom: bool, first_line: bytes) -> None:
    data = report_export.header(dialect)
    assert data.startswith(b"\xef\xbb\xbf") is starts_with_bom
    assert data.removeprefix(b"\xef\xbb\xbf").startswith(first_line) and data.endswith(b"\r\n")
    assert report_export.rows([transaction()], AMSTERDAM, dialect).count(b"\xef\xbb\xbf") == 0


@pytest.mark.parametrize(
    ("name", "dialect"),
    [("rfc4180", CsvDialect.rfc4180), ("excel-nl", CsvDialect.excel_nl), ("EXCEL-NL", None), ("nl", None)],
)
def test_a_dialect_by_name(name: str, dialect: CsvDialect | None) -> None:
    if dialect is None:
        with pytest.raises(ValueError, match=f"dialect '{name}' is not one of excel-nl, rfc4180"):
            report_export.dialect_named(name)
    else:
        assert report_export.dialect_named(name) is dialect


@pytest.mark.parametrize(
    ("dialect", "read_with", "name"),
    [
        # The operator's export (RFC 4180) opened in a Dutch or Belgian Excel, which splits on `;`.
        (CsvDialect.rfc4180, ";", "Kassa;=cmd|' /C calc'!A0"),
        (CsvDialect.rfc4180, ";", "Kassa;@SUM(1,2);+1;-1;\t=1;\r=1"),
        (CsvDialect.rfc4180, ";", "Kassa\n=1+2"),
        # The excel-nl form opened in an Excel with English settings, which splits on `,`.
        (CsvDialect.excel_nl, ",", "Kassa,=cmd|' /C calc'!A0"),
        (CsvDialect.excel_nl, ",", "Kassa\r\n+1"),
    ],
)
def test_text_split_by_a_spreadsheet_on_the_other_separator_is_no_formula(
    dialect: CsvDialect, read_with: str, name: str
) -> None:
    data = report_export.rows([transaction(device_name=name, location_name=name)], AMSTERDAM, dialect)
    cells = [
        cell
        for line in csv.reader(io.StringIO(data.decode(), newline=""), delimiter=read_with)
        for cell in line
    ]
    formulas = [cell for cell in cells if cell.startswith(report_export.FORMULA_STARTS)]
    assert not formulas, f"cells a spreadsheet reading with {read_with!r} runs: {formulas}"


@pytest.mark.parametrize(
    ("dialect", "name", "cell"),
    [
        (CsvDialect.rfc4180, "Alles 5,- bij Zoë", "Alles 5,- bij Zoë"),  # `,` is quoted, read whole
        (CsvDialect.excel_nl, "Café Zoë; Noord", "Café Zoë; Noord"),
        (CsvDialect.rfc4180, "Kassa;-1", "Kassa;'-1"),
        (CsvDialect.excel_nl, "Alles 5,-", "Alles 5,'-"),
        (CsvDialect.rfc4180, "Kassa\r\n=1", "Kassa\r\n'=1"),
    ],
)
def test_text_in_its_own_dialect(dialect: CsvDialect, name: str, cell: str) -> None:
    (row,) = parsed(dialect, transaction(device_name=name))
    assert row["device_name"] == cell


@pytest.mark.parametrize(
    ("rows", "chunk_bytes_max", "chunks_expected"),
    [
        (0, 1_000, 1),  # the header alone
        (3, 1_000_000, 1),  # a page well within the limit is one chunk
        (3, 1, 4),  # each line alone: a line longer than the limit is a chunk of its own
        (10, 700, 3),  # 224 bytes of header, lines of 156: 692, 624 and 468 bytes
    ],
)
def test_a_page_is_cut_between_lines_into_chunks_within_the_limit(
    rows: int, chunk_bytes_max: int, chunks_expected: int
) -> None:
    page = [transaction(transaction_id=f"t-{n}") for n in range(rows)]
    header = report_export.header(CsvDialect.excel_nl)
    chunks = list(report_export.chunks(page, AMSTERDAM, CsvDialect.excel_nl, chunk_bytes_max, before=header))
    assert b"".join(chunks) == header + report_export.rows(page, AMSTERDAM, CsvDialect.excel_nl)
    assert len(chunks) == chunks_expected
    assert all(chunk.endswith(b"\r\n") for chunk in chunks), "cut between lines"
    assert all(len(chunk) <= chunk_bytes_max for chunk in chunks if chunk.count(b"\r\n") > 1)


class CountedPattern:
    """A pattern whose substitutions are counted."""

    def __init__(self, pattern: re.Pattern[str]) -> None:
        self.pattern, self.substitutions = pattern, 0

    def sub(self, replacement: str, text: str) -> str:
        self.substitutions += 1
        return self.pattern.sub(replacement, text)


def test_only_cells_holding_a_separator_or_a_line_break_are_searched_for_splits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Eleven substitutions a row, nearly all finding nothing, were a third of an export's CPU
    (60,000 rows: 0.9 s of some 2.5 s)."""
    counted = {dialect: CountedPattern(p) for dialect, p in report_export._SPLIT_ELSEWHERE.items()}
    monkeypatch.setattr(report_export, "_SPLIT_ELSEWHERE", counted)
    page = [transaction(transaction_id=f"t-{n}", location_name="Noord") for n in range(100)]
    page.append(transaction(device_name="Kassa;-1", location_name="Noord"))
    for dialect in CsvDialect:
        data = b"".join(report_export.chunks(page, AMSTERDAM, dialect, 1_000_000))
        assert b"Kassa;'-1" in data if dialect is CsvDialect.rfc4180 else b"Kassa;-1" in data
    substitutions = {dialect.value: pattern.substitutions for dialect, pattern in counted.items()}
    assert substitutions == {"rfc4180": 1, "excel-nl": 0}, "the one cell with `;`, in the form it splits"
