"""Inbound ISO 8583 flows, from an audit of session 21: a completion is taken on a card loaded to
its limit, and an 0200 is answered as its commit lands, not 91 while it may still move money."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import update

from protocols.iso8583 import IsoMessage
from switch.store.schema import transactions
from tests.integration.harness import World, journal_write_held_past_a_wait
from tests.integration.test_inbound_iso import (
    IsoClient,
    authorisation,
    balance,
    completion_of,
    financial,
    inbound_world,
    ledger_clean,
    reversal_of,
)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    yield from inbound_world(tmp_path)


@pytest.fixture
def slow_world(tmp_path: Path) -> Iterator[World]:
    yield from inbound_world(tmp_path, reply_timeout_s=1.0, ask_timeout_s=1.0)


def test_a_completion_of_a_card_loaded_to_its_limit_is_taken(world: World) -> None:
    """decide_completion: 'what became of the card since (blocked, expired, loaded to its limit)
    does not refuse it'. The gift programme's limit is 1000.00 EUR."""
    client = IsoClient(world)
    card = world.issue(100_000)
    original = authorisation(card, 400)
    assert client.ask(original)["39"] == "00"
    assert world.terminals[0].load(card, 400).response_code == "00"  # back at its limit
    assert balance(world, card) == 100_000
    answer = client.ask(completion_of(original, 250))
    repeat = client.ask({**completion_of(original, 250), "t": "0221"})
    client.close()
    assert (answer["39"], repeat["39"]) == ("00", "00"), (answer.get("44"), repeat.get("44"))
    assert balance(world, card) == 100_150
    ledger_clean(world)


def test_a_redemption_whose_commit_outlasts_the_reply_timeout_is_answered_as_it_lands(
    slow_world: World,
) -> None:
    """An 0200 whose commit outlasted reply_timeout_s was answered 91 (a decline to the acquirer, which
    does not reverse a declined request), and the redemption landed afterwards: the card was charged."""
    world = slow_world
    card = world.issue(1_000)
    client = IsoClient(world)
    assert client.ask(financial(card, 100))["39"] == "00"  # the card's actor is live
    # Its write waits until the handler's wait for it (Reply.settle in _redeem) outlasted the reply timeout.
    with journal_write_held_past_a_wait(world, world.server.settings.reply_timeout_s, "settle", "_redeem"):
        answer: IsoMessage = client.ask(financial(card, 300))
    client.close()
    time.sleep(0.5)
    code = answer["39"]
    moved = 1_000 - 100 - balance(world, card)
    # It waits for its commit now: approved once durable, and the money moved as answered.
    assert (code, moved) == ("00", 300), f"answered {code} ({answer.get('44')}); {moved} minor units taken"


@pytest.mark.parametrize(("stored_mti", "code"), [("0100", "00"), ("0200", None), ("", "00")])
def test_a_completion_is_taken_only_of_what_was_stored_as_an_0100(
    world: World, stored_mti: str, code: str | None
) -> None:
    """An 0100 and an 0200 are both stored as redemptions; the MTI stored beside one decides
    whether a 0220 naming it as an 0100 is taken. A row from before MTIs were kept ("") is
    completed as it was then."""
    client = IsoClient(world)
    card = world.issue(1_000)
    original = authorisation(card, 400)
    assert client.ask(original)["39"] == "00"
    with world.server.core.store.engine.begin() as conn:
        conn.execute(update(transactions).values(mti=stored_mti))
    answer = client.ask_or_none(completion_of(original, 250))  # None: an advice left unanswered
    client.close()
    assert (answer or {}).get("39") == code, answer
    assert balance(world, card) == (750 if code == "00" else 600)
    ledger_clean(world)


@pytest.mark.parametrize(("stored_mti", "code"), [("0200", "00"), ("0100", "25"), ("", "00")])
def test_a_reversal_is_taken_only_of_what_was_stored_as_the_mti_field_90_names(
    world: World, stored_mti: str, code: str
) -> None:
    """As a completion: the MTI stored beside the original decides whether a reversal naming it as
    an 0200 is taken. A row from before MTIs were kept ("") is reversed as it was then."""
    client = IsoClient(world)
    card = world.issue(1_000)
    original = financial(card, 400)
    assert client.ask(original)["39"] == "00"
    with world.server.core.store.engine.begin() as conn:
        conn.execute(update(transactions).values(mti=stored_mti))
    answer = client.ask(reversal_of(original, names="0200"))
    client.close()
    assert answer["39"] == code, answer.get("44")
    assert balance(world, card) == (1_000 if code == "00" else 600)
    ledger_clean(world)
