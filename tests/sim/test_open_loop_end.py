"""The open loop at a low rate per terminal: the run must end when its duration is over."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import trio

from terminal_sim.cards import CardPopulation, synthetic_cards
from terminal_sim.config import LoadModel, ShopLogin, SimConfig
from terminal_sim.fleet import run_fleet
from terminal_sim.processes import ChildServer, start_echo_server
from terminal_sim.records import Operation


@pytest.fixture(scope="module")
def echo_server() -> Iterator[ChildServer]:
    server = start_echo_server()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.trio
async def test_a_quiet_open_loop_ends_on_time_and_closes_its_days(echo_server: ChildServer) -> None:
    """4 terminals at 0.4 flows/s for the fleet (0.1/s each), for 1 s, against the echo server.
    A terminal whose next arrival falls after the end sleeps until that arrival (mean 10 s after
    its previous one) before it notices the run is over; past the drain grace the fleet is
    cancelled: the report says "drain deadline hit" and those terminals never close their day."""
    config = SimConfig(
        terminals=4,
        duration_s=1.0,
        load_model=LoadModel.open,
        target_rate_per_s=0.4,
        terminal_timeout_s=0.5,  # drain grace: max(5 s, 0.5 s * 5 + 0.5 s) = 5 s
        seed=3,
        channels=1,
    )
    login = ShopLogin("echo@txswitch.example", "echo", "Echo", "1001", "1234")
    cards = CardPopulation(synthetic_cards(50, 3), 1.1)
    started_s = trio.current_time()
    result = await run_fleet(echo_server.address, config, login, cards, progress=None)
    took_s = trio.current_time() - started_s
    day_closes = sum(1 for e in result.exchanges if e.operation is Operation.day_close)
    assert result.stopped_early == "", f"{result.stopped_early!r} after {took_s:.1f} s"
    assert day_closes == config.terminals
