"""Audit session 22: money credited to a replaced card "follows it" (core._follow_replacement) on a
daemon thread started by the card actor after the credit is decided. Nothing stored says a move is
owed and nothing at start looks for one: a switch stopped (or dead) between the credit landing and
that thread's transfer leaves the money on the lost card, which no terminal takes, for good."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import event

from switch.server import SwitchServer
from tests.integration.harness import World, start_world
from tests.integration.test_card_replacement import replace


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    world = start_world(tmp_path, "", 1)
    yield world
    world.channel.close()


def balance_of(server: SwitchServer, number: str) -> int:
    card_id = server.core.cards.card_id(number)
    assert card_id is not None
    return server.core.store.card_state(card_id).balance_minor


def follows_counted(server: SwitchServer) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Non-zero samples of the replaced-card follow counters, from the server's own registry."""
    names = ("txswitch_replaced_card_follows_total", "txswitch_replaced_card_followed_minor_total")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(server.metrics.exposition().decode())
        for sample in family.samples
        if sample.name in names and sample.value
    }


def test_a_ride_reversed_just_before_a_restart_still_reaches_the_new_card(world: World) -> None:
    terminal = world.terminals[0]
    lost, new = world.issue(2_000, world.benefit_programme), world.issue(0, world.benefit_programme)
    assert terminal.redeem(lost, 700, "ride-1").response_code == "00"
    assert replace(world, lost, new).moved.amount_minor == 1_300

    engine = world.server.core.store.engine
    reached, release = threading.Event(), threading.Event()
    held: list[threading.Thread] = []

    def before(_conn: Any, _cursor: Any, _statement: str, *_: Any) -> None:
        if threading.current_thread().name == "follow-replacement":
            held.append(threading.current_thread())
            reached.set()
            release.wait(30)  # the switch stops (or dies) before the move is made

    event.listen(engine, "before_cursor_execute", before)
    again: SwitchServer | None = None
    try:
        reversal = terminal.reversal("ride-1")
        assert reversal.response_code == "00", reversal.message
        assert reached.wait(10), "no move of the reversed ride was started"
        world.server.stop()

        again = SwitchServer(world.server.settings)
        again.start()
        channel = grpc.insecure_channel(again.address)
        deadline = time.monotonic() + 5
        while balance_of(again, new) != 2_000 and time.monotonic() < deadline:
            time.sleep(0.05)
        on_new, on_lost = balance_of(again, new), balance_of(again, lost)
        channel.close()
        assert (on_new, on_lost) == (2_000, 0), f"after the restart: new card {on_new}, lost card {on_lost}"
        # The start's move is counted as such, once, with its amount.
        deadline = time.monotonic() + 5
        while not follows_counted(again) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert follows_counted(again) == {
            ("txswitch_replaced_card_follows_total", (("outcome", "moved"), ("when", "start"))): 1.0,
            ("txswitch_replaced_card_followed_minor_total", (("currency", "EUR"), ("when", "start"))): 700.0,
        }
    finally:
        if again is not None:
            again.stop()
        # The held thread first: removing the listener while it is still inside it (SQLAlchemy keeps
        # listeners in a deque it iterates) made it log "deque mutated during iteration" instead of why
        # the old switch's move fails (its card registry is closed).
        release.set()
        for thread in held:
            thread.join(10)
        event.remove(engine, "before_cursor_execute", before)
