"""Audit session 22: money credited to a replaced card is documented to follow it to its
replacement (docs/audits.md, "money credited to a replaced card follows it"). A completion (0220)
of an authorisation taken before the replacement credits the lost card; only `CardActor._undo`
calls `credited_after_replacement`, so what the completion gives back stays on the lost card."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from protocols.wire import backoffice_pb2 as bo
from protocols.wire import terminal_pb2 as pb
from tests.integration.harness import World, new_txn
from tests.integration.test_inbound_iso import (
    IsoClient,
    authorisation,
    completion_of,
    inbound_world,
    ledger_clean,
)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    yield from inbound_world(tmp_path)


def card_balance(world: World, number: str) -> int:
    core = world.server.core
    card_id = core.cards.card_id(number)
    assert card_id is not None
    return core.store.card_state(card_id).balance_minor


def test_a_completion_after_the_replacement_reaches_the_new_card(world: World) -> None:
    client = IsoClient(world)
    lost, new = world.issue(1_000), world.issue(0)
    original = authorisation(lost, 400)
    assert client.ask(original)["39"] == "00"  # 4.00 held on the card
    moved = world.backoffice.ReplaceCard(
        bo.ReplaceCardRequest(
            lost_card=pb.CardRef(card_number=lost),
            replacement_card=pb.CardRef(card_number=new),
            request_id=new_txn(),
        ),
        metadata=world.admin_metadata,
        timeout=30,
    )
    assert moved.moved.amount_minor == 600
    answer = client.ask(completion_of(original, 250))  # the shop took 2.50: 1.50 goes back
    client.close()
    assert answer["39"] == "00", answer.get("44")
    deadline = time.monotonic() + 5
    while card_balance(world, new) != 750 and time.monotonic() < deadline:
        time.sleep(0.05)
    ledger_clean(world)
    on_new, on_lost = card_balance(world, new), card_balance(world, lost)
    assert (on_new, on_lost) == (750, 0), f"new card {on_new}, stranded on the lost card {on_lost}"
