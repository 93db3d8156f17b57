"""A day close reads as taken less undone, whatever was undone and however (session 22 audit).

Before, a reversed original left its line while its reversal line was still counted, so a
reversal in its original's period was taken off twice; and one cancel line held both cancelled
sales and cancelled refunds, which a reader must subtract and add, so no sign read it right.
Now an undone original stays on its line, and each cancel or reversal line names what it undid
(`TypeTotal.undoes`)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest

from protocols.wire import backoffice_pb2 as bo
from protocols.wire import terminal_pb2 as pb
from tests.integration.harness import World, new_txn, world_fixture
from tests.integration.payment_harness import payment_world, wait_until

TAKINGS_SIGN = {"payment": 1, "redemption": 1, "load": 1, "refund": -1}


def net_minor(report: pb.DayCloseReport) -> int:
    """Taken less undone: an undo line counts against what it undid."""
    return sum(
        (-TAKINGS_SIGN[t.undoes] if t.undoes else TAKINGS_SIGN[t.transaction_type]) * t.total.amount_minor
        for t in report.totals
    )


def lines(report: pb.DayCloseReport) -> list[tuple[str, str, int, int]]:
    return [(t.transaction_type, t.undoes, t.count, t.total.amount_minor) for t in report.totals]


@pytest.fixture(params=["sqlite", "postgres"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    yield from world_fixture(request, tmp_path, terminals=1)


def test_a_bank_card_payment_reversed_in_its_own_period_is_not_subtracted_twice(tmp_path: Path) -> None:
    """Pay 25.00 and 10.00, reverse the 25.00 before the close: the acquirer holds 10.00, the
    close nets -15.00 (no payment line for the 25.00, and a reversal line of 25.00)."""
    with payment_world(tmp_path, "sqlite") as both:
        reversed_txn = new_txn()
        assert both.terminal.pay(2_500, txn=reversed_txn).response_code == "00"
        assert both.terminal.pay(1_000).response_code == "00"
        assert both.terminal.reversal(reversed_txn).response_code == "00"
        wait_until(lambda: not both.saf_pending())
        standing_at_acquirer = 1_000 * len(both.host.record().approved_not_reversed())
        x_report = both.terminal.x_report()
        close = both.terminal.day_close()
    assert standing_at_acquirer == 1_000
    assert net_minor(x_report) == standing_at_acquirer, f"X report lines {lines(x_report)}"
    assert net_minor(close) == standing_at_acquirer, (
        f"the acquirer holds {standing_at_acquirer}, the close nets {net_minor(close)}: {lines(close)}"
    )


def test_a_redemption_reversed_in_its_period_is_counted_like_a_cancelled_one(world: World) -> None:
    """Redeem 1.00 (stands), 0.40 cancelled, 0.40 reversed, all in one period: 1.00 is owed to the
    merchant and is the report's approved redemptions; the close nets 0.60."""
    terminal = world.terminals[0]
    card = world.issue(10_000)
    assert terminal.redeem(card, 100, "stands").response_code == "00"
    assert terminal.redeem(card, 40, "voided").response_code == "00"
    assert terminal.cancel("voided").response_code == "00"
    assert terminal.redeem(card, 40, "reversed").response_code == "00"
    assert terminal.reversal("reversed").response_code == "00"
    close = terminal.stub.DayClose(pb.DayCloseRequest(close_id="c1"), metadata=terminal.metadata, timeout=20)

    today = dt.datetime.now(dt.UTC).date()
    report = world.backoffice.ListTransactions(
        bo.TransactionReportRequest(
            from_date=str(today - dt.timedelta(days=1)),
            to_date=str(today + dt.timedelta(days=1)),
            types=["redemption"],
            statuses=["approved"],
        ),
        metadata=world.admin_metadata,
        timeout=20,
    )
    report_standing = sum(t.approved.amount_minor for t in report.totals)
    summary = world.backoffice.GetMerchantSummary(
        bo.MerchantSummaryRequest(
            merchant_id=world.merchant_id,
            from_date=str(today - dt.timedelta(days=1)),
            to_date=str(today + dt.timedelta(days=1)),
        ),
        metadata=world.admin_metadata,
        timeout=20,
    )
    owed = {p.programme_id: p.owed.amount_minor for p in summary.programmes}[world.gift_programme]
    assert report_standing == owed == 100
    assert net_minor(close) == 100, (
        f"report and ledger: 100 stands; the close nets {net_minor(close)}: {lines(close)}"
    )


def test_a_cancelled_refund_and_a_cancelled_redemption_can_both_be_read_from_the_close(
    world: World,
) -> None:
    """Redeem 1.00, refund 0.30 of it, cancel that refund (1.00 stands again); redeem 0.40 and
    cancel it. The close: redemption 2 for 1.40, refund 1 for 0.30, cancel 2 for 0.70 in one line.
    Read with the cancel line subtracting (a voided sale) it nets 0.40; adding (an undone refund),
    1.80; 1.00 stands. One line for both undoes cannot be read right either way."""
    terminal = world.terminals[0]
    card = world.issue(10_000)
    assert terminal.redeem(card, 100, "sale").response_code == "00"
    assert terminal.refund("sale", 30, txn="give-back").response_code == "00"
    assert terminal.cancel("give-back", txn="undo-give-back").response_code == "00"
    assert terminal.redeem(card, 40, "voided").response_code == "00"
    assert terminal.cancel("voided", txn="undo-voided").response_code == "00"
    summary = world.backoffice.GetMerchantSummary(
        bo.MerchantSummaryRequest(
            merchant_id=world.merchant_id, from_date=str(dt.datetime.now(dt.UTC).date())
        ),
        metadata=world.admin_metadata,
        timeout=20,
    )
    assert {p.programme_id: p.owed.amount_minor for p in summary.programmes}[world.gift_programme] == 100
    close = terminal.stub.DayClose(pb.DayCloseRequest(close_id="c1"), metadata=terminal.metadata, timeout=20)
    assert net_minor(close) == 100, f"100 stands; the close nets {net_minor(close)}: {lines(close)}"
