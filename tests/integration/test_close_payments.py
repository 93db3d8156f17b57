"""Bank-card payments and the day close: what the closes count must match what stands at the acquirer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from protocols.wire import terminal_pb2 as pb
from tests.integration.harness import new_txn
from tests.integration.payment_harness import PaymentWorld, payment_world, wait_until


@pytest.fixture(params=["sqlite", "postgres"])
def both(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[PaymentWorld]:
    with payment_world(tmp_path, request.param) as world:
        yield world


def _net_minor(report: pb.DayCloseReport) -> int:
    """Payments taken less payments undone (cancel, reversal lines), as the close shows them."""
    sign = {"payment": 1, "cancel": -1, "reversal": -1}
    return sum(sign.get(t.transaction_type, 0) * t.total.amount_minor for t in report.totals)


def test_an_abort_after_the_day_close_shows_in_a_close_or_is_refused(both: PaymentWorld) -> None:
    """Pay 25.00, close the day (the close counts it), then Abort that payment. Either the abort is
    refused like a cancel after the close (12, nothing sent), or its undoing shows in the next
    close: the closes' net must equal what stands at the acquirer."""
    txn = new_txn()
    assert both.terminal.pay(2_500, txn=txn).response_code == "00"
    first = both.terminal.day_close()
    assert _net_minor(first) == 2_500
    aborted = both.terminal.abort(txn)
    wait_until(lambda: not both.saf_pending())  # a reversal the switch queued has reached the acquirer
    second = both.terminal.day_close()
    standing_at_acquirer = 2_500 if both.host.record().approved_not_reversed() else 0
    counted = _net_minor(first) + _net_minor(second)
    assert counted == standing_at_acquirer, (
        f"abort answered {aborted.response_code} ({aborted.message!r}); the payment stands at the "
        f"acquirer for {standing_at_acquirer}, but the closes count {counted} "
        f"(second close: {[(t.transaction_type, t.total.amount_minor) for t in second.totals]})"
    )
