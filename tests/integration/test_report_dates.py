"""Report days at the ends of the calendar: a clear INVALID_ARGUMENT, not an internal error."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from protocols.wire import backoffice_pb2 as bo
from tests.integration.harness import World, world_fixture
from tests.integration.test_portal import refusal, sign_in, stub


@pytest.fixture(params=["sqlite"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    yield from world_fixture(request, tmp_path, terminals=1)


@pytest.mark.parametrize(
    ("from_date", "to_date"),
    [("9999-12-31", ""), ("0001-01-01", ""), ("9999-12-01", "9999-12-31")],
)
def test_portal_report_of_a_day_at_the_calendar_end_is_refused_by_name(
    world: World, from_date: str, to_date: str
) -> None:
    mine = sign_in(world)
    request = bo.TransactionReportRequest(from_date=from_date, to_date=to_date)
    code, details = refusal(stub(world).ListTransactions, request, metadata=mine, timeout=20)
    assert code == grpc.StatusCode.INVALID_ARGUMENT, (code, details)


def test_backoffice_merchant_summary_of_the_last_day_is_refused_by_name(world: World) -> None:
    request = bo.MerchantSummaryRequest(merchant_id=world.merchant_id, from_date="9999-12-31")
    with pytest.raises(grpc.RpcError) as refused:
        world.backoffice.GetMerchantSummary(request, metadata=world.admin_metadata, timeout=20)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, refused.value.details()


def test_settle_due_as_of_the_first_calendar_day_is_refused_by_name(world: World) -> None:
    request = bo.SettleDueRequest(as_of_date="0001-01-01")
    with pytest.raises(grpc.RpcError) as refused:
        world.backoffice.SettleDue(request, metadata=world.admin_metadata, timeout=20)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, refused.value.details()
