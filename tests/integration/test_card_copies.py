"""One node starts a card actor from what it knows (the card's issue, its last actor) without a read.

On PostgreSQL, where several nodes are expected, every actor reads its card when it starts.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import World, new_txn, on_statement, statements_run, world_fixture


@pytest.fixture(params=["sqlite", "postgres"])
def quick_passivation(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    yield from world_fixture(request, tmp_path, card_actor_idle_s=0.0, reaper_interval_s=0.05)


def card_reads_expected(world: World) -> int:
    """One node on SQLite starts an actor from what it knows; on PostgreSQL each reads its card."""
    return 1 if world.server.settings.effective_database_url.startswith("postgresql") else 0


def wait_until_stopped(world: World, card_id: str) -> None:
    deadline = time.monotonic() + 10
    while world.server.core.card_actors.is_live(card_id):
        assert time.monotonic() < deadline, "the card actor was not passivated"
        time.sleep(0.01)


def test_a_card_issued_here_starts_its_actor_from_the_issue(world: World) -> None:
    card = world.issue(2_500)
    with statements_run(world.server.core.store.engine, containing="FROM cards") as seen:
        assert world.terminals[0].balance(card) == 2_500
    assert len(seen) == card_reads_expected(world)
    several_nodes_expected = world.server.settings.effective_database_url.startswith("postgresql")
    assert (world.server.core.card_copies is None) is several_nodes_expected


def test_a_passivated_card_actor_leaves_what_it_knew_to_its_successor(quick_passivation: World) -> None:
    world = quick_passivation
    card = world.issue(1_000)
    terminal = world.terminals[0]
    redeemed = terminal.redeem(card, 300, txn=new_txn())
    assert redeemed.response_code == "00"
    card_id = world.server.core.cards.card_id(card)
    assert card_id is not None
    wait_until_stopped(world, card_id)
    with statements_run(world.server.core.store.engine, containing="FROM cards") as seen:
        assert terminal.balance(card) == 700
        assert terminal.redeem(card, 800, txn=new_txn()).response_code == "51"
    assert len(seen) == card_reads_expected(world)
    check = world.ledger()
    assert (check.unbalanced_entries, check.negative_card_balances, check.balance_mismatches) == (0, 0, 0)


def test_no_card_is_read_on_the_event_loop_thread(world: World) -> None:
    """A card actor that has to read its card first is run on its own thread, not the gRPC loop's."""
    card = world.issue(2_500)
    card_id = world.server.core.cards.card_id(card)
    assert card_id is not None
    copies = world.server.core.card_copies
    if copies is not None:
        copies.forget(card_id)  # one node: without a copy its next actor reads the card
    assert not world.server.core.card_actors.is_live(card_id)
    readers: list[str] = []

    def record(_cursor: Any, statement: str, _parameters: Any) -> None:
        if "FROM cards" in statement:
            readers.append(threading.current_thread().name)

    with on_statement(world.server.core.store.engine, "before", record):
        assert world.terminals[0].balance(card) == 2_500
        assert world.terminals[0].redeem(card, 500, txn=new_txn()).response_code == "00"
    assert readers, "the card was not read at all"
    assert "grpc-loop" not in readers, readers
