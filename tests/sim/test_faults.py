"""Fault injection: the shares, and what each fault makes a terminal do on the wire."""

from __future__ import annotations

import collections
import random
from collections.abc import Iterator

import pytest

from terminal_sim.cards import CardPopulation, synthetic_cards
from terminal_sim.config import FaultShares, ShopLogin, SimConfig
from terminal_sim.faults import Fault, choose_fault
from terminal_sim.fleet import FleetResult, run_fleet
from terminal_sim.processes import ChildServer, start_echo_server
from terminal_sim.records import MONEY_OPERATIONS, Operation, Outcome

DRAWS = 50_000


@pytest.mark.parametrize(
    ("shares", "expected"),
    [
        (FaultShares(), {Fault.none: 1.0}),
        (FaultShares(duplicate=1.0), {Fault.duplicate: 1.0}),
        (
            FaultShares(duplicate=0.1, timeout=0.2, abandon=0.05),
            {Fault.none: 0.65, Fault.duplicate: 0.1, Fault.timeout: 0.2, Fault.abandon: 0.05},
        ),
    ],
)
def test_faults_are_drawn_at_their_shares(shares: FaultShares, expected: dict[Fault, float]) -> None:
    rng = random.Random(11)
    counts = collections.Counter(choose_fault(shares, rng) for _ in range(DRAWS))
    assert set(counts) == set(expected)
    for fault, share in expected.items():
        assert counts[fault] / DRAWS == pytest.approx(share, abs=0.01)


@pytest.mark.parametrize(
    ("duplicate", "timeout", "abandon"),
    [(-0.1, 0.0, 0.0), (1.1, 0.0, 0.0), (0.5, 0.4, 0.2)],
)
def test_impossible_shares_are_refused(duplicate: float, timeout: float, abandon: float) -> None:
    with pytest.raises(ValueError):
        FaultShares(duplicate, timeout, abandon)


@pytest.fixture(scope="module")
def echo_server() -> Iterator[ChildServer]:
    server = start_echo_server()
    try:
        yield server
    finally:
        server.stop()


async def run_with(address: str, faults: FaultShares, fault_timeout_s_max: float = 0.004) -> FleetResult:
    config = SimConfig(
        terminals=4,
        duration_s=1.0,
        faults=faults,
        think_time_ms_mean=5.0,
        seed=3,
        channels=1,
        fault_timeout_s_max=fault_timeout_s_max,
    )
    login = ShopLogin("echo@txswitch.example", "echo", "Echo", "1001", "1234")
    cards = CardPopulation(synthetic_cards(50, 3), 1.1)
    return await run_fleet(address, config, login, cards, progress=None)


@pytest.mark.trio
async def test_duplicates_send_every_money_request_twice(echo_server: ChildServer) -> None:
    result = await run_with(echo_server.address, FaultShares(duplicate=1.0))
    money = [e for e in result.exchanges if e.operation in MONEY_OPERATIONS]
    per_id = collections.Counter(e.transaction_id for e in money)
    assert money
    assert set(per_id.values()) == {2}
    assert sum(e.duplicate for e in money) == len(per_id)


@pytest.mark.trio
async def test_timeouts_are_followed_by_status_or_reversal(echo_server: ChildServer) -> None:
    result = await run_with(echo_server.address, FaultShares(timeout=1.0))
    lost = [e for e in result.exchanges if e.operation in MONEY_OPERATIONS and e.outcome is Outcome.timed_out]
    follow_ups = {
        e.transaction_id: e.operation
        for e in result.exchanges
        if e.operation in (Operation.status, Operation.reversal)
    }
    assert lost
    assert all(e.transaction_id in follow_ups for e in lost)
    assert {Operation.status, Operation.reversal} <= set(follow_ups.values())


@pytest.mark.trio
async def test_abandoned_requests_are_never_asked_about(echo_server: ChildServer) -> None:
    # The terminal gives up within 0.1 ms, before any answer can come back on loopback: with the
    # default 4 ms, a fast machine answers most requests first and none may be abandoned.
    result = await run_with(echo_server.address, FaultShares(abandon=1.0), fault_timeout_s_max=0.0001)
    abandoned = [e for e in result.exchanges if e.outcome is Outcome.abandoned]
    asked = {
        e.transaction_id for e in result.exchanges if e.operation in (Operation.status, Operation.reversal)
    }
    assert abandoned
    assert not asked & {e.transaction_id for e in abandoned}


@pytest.mark.trio
async def test_the_window_is_marked_once_after_activation_and_once_after_the_last_terminal(
    echo_server: ChildServer,
) -> None:
    config = SimConfig(
        terminals=4, duration_s=0.5, faults=FaultShares(), think_time_ms_mean=5.0, seed=3, channels=1
    )
    login = ShopLogin("echo@txswitch.example", "echo", "Echo", "1001", "1234")
    marks: list[str] = []
    result = await run_fleet(
        echo_server.address,
        config,
        login,
        CardPopulation(synthetic_cards(50, 3), 1.1),
        progress=None,
        on_window_start=lambda: marks.append("start"),
        on_window_end=lambda: marks.append("end"),
    )
    assert marks == ["start", "end"]
    assert result.activation.completed == config.terminals
    assert result.statistics.completed > 0
