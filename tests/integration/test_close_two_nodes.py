"""One terminal answered by two nodes on one database (a balancer that spreads its calls): a day
close taken on one node must open the next period on the other as well."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from protocols.wire import terminal_pb2 as pb
from tests.integration.harness import TerminalClient, World, second_node, world_fixture


@pytest.fixture(params=["postgres", "sqlite"])
def nodes(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[World, TerminalClient, TerminalClient]]:
    shared = "auto" if request.param == "postgres" else "yes"
    for world in world_fixture(request, tmp_path, several_nodes=shared, shared_copy_max_age_s=0.0):
        with second_node(world, tmp_path / "node-b") as b:
            yield world, world.terminals[0], b.terminal


def _close(terminal: TerminalClient, close_id: str) -> pb.DayCloseReport:
    return terminal.stub.DayClose(
        pb.DayCloseRequest(close_id=close_id), metadata=terminal.metadata, timeout=30
    )


def _redeemed(report: pb.DayCloseReport) -> int:
    return sum(t.total.amount_minor for t in report.totals if t.transaction_type == "redemption")


def test_a_redemption_on_the_other_node_after_a_close_is_counted_in_the_next_close(
    nodes: tuple[World, TerminalClient, TerminalClient],
) -> None:
    world, on_a, on_b = nodes
    card = world.issue(5_000)
    assert on_b.redeem(card, 100).response_code == "00"  # node B's terminal actor is in period 1
    first = _close(on_a, "c1")
    assert (first.period_number, _redeemed(first)) == (1, 100)
    late = on_b.redeem(card, 200)
    assert late.response_code == "00"
    second = _close(on_a, "c2")
    counted = _redeemed(first) + _redeemed(second)
    assert counted == 300, (
        f"node B recorded the redemption in period {late.period_number}, closed already: "
        f"the closes count {counted} of 300 redeemed"
    )


def test_one_close_sent_to_both_nodes_at_once_is_one_close(
    nodes: tuple[World, TerminalClient, TerminalClient],
) -> None:
    """The terminal's close, its answer lost, sent again through the balancer to the other node while
    the first is still on its way: both answer the one close, and the next close is of period 2."""
    world, on_a, on_b = nodes
    card = world.issue(5_000)
    assert on_a.redeem(card, 100).response_code == "00"
    answers: list[pb.DayCloseReport] = []
    senders = [threading.Thread(target=lambda t=t: answers.append(_close(t, "c1"))) for t in (on_a, on_b)]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join()
    assert len(answers) == 2 and answers[0] == answers[1], answers
    assert (answers[0].sequence_number, answers[0].period_number, _redeemed(answers[0])) == (1, 1, 100)
    following = _close(on_b, "c2")
    assert (following.sequence_number, following.period_number) == (2, 2)
