"""A card of a programme the merchant never joined, asked for its balance at the counter (a terminal's
Balance, the web back office's CardBalance), over real gRPC on loopback.

Its redemption was declined 58, but its balance, status and expiry were shown: any shop learnt what
a card of any programme held. Balance now answers what a redemption does (58, the programme named)
and nothing of the card but its masked number.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from protocols.wire import terminal_pb2 as pb
from switch.domain.response_codes import ResponseCode
from tests.integration.harness import World, statements_run, world_fixture
from tests.integration.test_portal import sign_in, stub

NOT_ACCEPTED = ResponseCode.merchant_not_in_programme
Ask = Callable[[World, str], pb.BalanceResponse]


@pytest.fixture(params=["sqlite", "postgres"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    yield from world_fixture(request, tmp_path, terminals=1)


def at_the_terminal(world: World, card: str) -> pb.BalanceResponse:
    terminal = world.terminals[0]
    request = pb.BalanceRequest(card=pb.CardRef(card_number=card))
    answer: pb.BalanceResponse = terminal.stub.Balance(request, metadata=terminal.metadata, timeout=20)
    return answer


def in_the_web_back_office(world: World, card: str) -> pb.BalanceResponse:
    request = pb.BalanceRequest(card=pb.CardRef(card_number=card))
    answer: pb.BalanceResponse = stub(world).CardBalance(request, metadata=sign_in(world), timeout=20)
    return answer


COUNTERS: dict[str, Ask] = {"terminal": at_the_terminal, "web": in_the_web_back_office}


@pytest.mark.parametrize("counter", COUNTERS)
def test_a_card_of_a_programme_the_merchant_never_joined_is_refused_as_its_redemption_is(
    world: World, counter: str
) -> None:
    ask = COUNTERS[counter]
    card = world.issue(4_321, world.foreign_programme)
    redeemed = world.terminals[0].redeem(card, 100)
    answer = ask(world, card)
    assert (answer.response_code, answer.message) == (NOT_ACCEPTED.iso_code, redeemed.message)
    assert answer.message == f"{NOT_ACCEPTED.message}: Elsewhere"
    assert not answer.HasField("balance") and not answer.card_status and not answer.expiry_date
    assert answer.card_masked and card not in str(answer)


@pytest.mark.parametrize("counter", COUNTERS)
def test_a_card_of_a_programme_the_merchant_joined_shows_its_balance(world: World, counter: str) -> None:
    card = world.issue(4_321)
    answer = COUNTERS[counter](world, card)
    assert (answer.response_code, answer.balance.amount_minor, answer.card_status) == ("00", 4_321, "active")


def test_a_programme_joined_since_shows_its_cards_balance_at_once(world: World) -> None:
    card = world.issue(4_321, world.foreign_programme)
    assert at_the_terminal(world, card).response_code == NOT_ACCEPTED.iso_code
    world.server.core.admin.join_programme(world.merchant_id, world.foreign_programme, 0)
    answer = at_the_terminal(world, card)
    assert (answer.response_code, answer.balance.amount_minor) == ("00", 4_321)


@pytest.fixture(params=["sqlite", "postgres"])
def remembering(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    """PostgreSQL's copies of what another node may change last a minute here, SQLite's until this
    node changes them."""
    yield from world_fixture(request, tmp_path, terminals=1, shared_copy_max_age_s=60.0)


@pytest.mark.parametrize("counter", COUNTERS)
def test_a_card_refused_58_again_soon_costs_no_read_of_the_memberships(
    remembering: World, counter: str
) -> None:
    # The "no" is read on the event loop's thread: remembered as another node's change is, so a
    # terminal presenting such a card again and again does not cost a read each time.
    world, ask = remembering, COUNTERS[counter]
    card = world.issue(4_321, world.foreign_programme)
    assert ask(world, card).response_code == NOT_ACCEPTED.iso_code
    with statements_run(world.server.core.store.engine, containing="merchant_programmes") as seen:
        for _ in range(3):
            assert ask(world, card).response_code == NOT_ACCEPTED.iso_code
        assert world.terminals[0].redeem(card, 100).response_code == NOT_ACCEPTED.iso_code
    assert seen == []
