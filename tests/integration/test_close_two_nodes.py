"""One terminal answered by two nodes on one database (a balancer that spreads its calls): a day
close taken on one node must open the next period on the other as well."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from protocols.wire import terminal_pb2 as pb
from protocols.wire import terminal_pb2_grpc as pb_grpc
from switch.server import SwitchServer
from tests.integration.harness import TerminalClient, World, world_fixture


@pytest.fixture(params=["postgres", "sqlite"])
def nodes(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[World, TerminalClient, TerminalClient]]:
    shared = "auto" if request.param == "postgres" else "yes"
    for world in world_fixture(request, tmp_path, several_nodes=shared, shared_copy_max_age_s=0.0):
        settings = world.server.settings.with_overrides(
            data_dir=tmp_path / "node-b", database_url=world.server.settings.effective_database_url
        )
        node_b = SwitchServer(settings)
        node_b.start()
        channel_b = grpc.insecure_channel(node_b.address)
        try:
            on_a = world.terminals[0]
            on_b = TerminalClient(pb_grpc.TerminalStub(channel_b), on_a.credential, on_a.terminal_id)
            yield world, on_a, on_b
        finally:
            channel_b.close()
            node_b.stop()


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
