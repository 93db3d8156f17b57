"""A day close taken on node B counts on node A: node A's terminal actor kept the period it read
when it started, so what depends on the open period was decided there on a period node B had
closed. It reads the terminal again once its copy is older than the shared copy age now."""

from __future__ import annotations

import time

from protocols.wire import terminal_pb2 as pb
from tests.integration.harness import TerminalClient, new_txn
from tests.integration.nodes.conftest import Nodes


def day_close(terminal: TerminalClient) -> pb.DayCloseReport:
    request = pb.DayCloseRequest(close_id=new_txn())
    report: pb.DayCloseReport = terminal.stub.DayClose(request, metadata=terminal.metadata, timeout=20)
    return report


def x_report(terminal: TerminalClient) -> pb.DayCloseReport:
    report: pb.DayCloseReport = terminal.stub.XReport(
        pb.XReportRequest(), metadata=terminal.metadata, timeout=20
    )
    return report


def test_a_redemption_of_a_period_closed_on_node_b_cannot_be_cancelled_on_node_a(nodes: Nodes) -> None:
    card = nodes.world.issue(1_000)
    original = nodes.on_a.redeem(card, 500)  # node A's terminal actor is live, in period 1
    assert original.response_code == "00"
    report = day_close(nodes.on_b)  # the close hands period 1, with the redemption, to settlement
    assert report.period_number == original.period_number
    time.sleep(1.2)  # older than any copy may be (0 s here; the default is 1 s)
    on_b = nodes.on_b.cancel(original.transaction_id)
    assert on_b.response_code == "12"  # "the original's period is closed; refund instead"
    on_a = nodes.on_a.cancel(original.transaction_id)
    assert on_a.response_code == "12", f"node A cancelled it: {on_a.response_code} {on_a.message}"


def test_the_x_report_on_node_a_counts_the_period_node_b_opened(nodes: Nodes) -> None:
    card = nodes.world.issue(1_000)
    assert nodes.on_a.redeem(card, 300).response_code == "00"
    day_close(nodes.on_b)
    time.sleep(1.2)
    assert nodes.on_a.redeem(card, 200).response_code == "00"  # stored in period 2
    on_b, on_a = x_report(nodes.on_b), x_report(nodes.on_a)
    assert [(t.transaction_type, t.total.amount_minor) for t in on_b.totals] == [("redemption", 200)]
    assert (on_a.period_number, [(t.transaction_type, t.total.amount_minor) for t in on_a.totals]) == (
        on_b.period_number,
        [("redemption", 200)],
    )
