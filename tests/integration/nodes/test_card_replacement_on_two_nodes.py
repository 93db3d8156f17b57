"""A lost card's whole balance moves to its replacement, whatever another node did just before; a
load another node decides after on its older copy of the card moves nothing."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from protocols.wire import backoffice_pb2 as bo
from protocols.wire import terminal_pb2 as pb
from tests.integration.harness import new_txn
from tests.integration.nodes.conftest import Nodes, two_nodes
from tests.integration.test_benefit_cards import assert_ledger_clean, card_balance


@pytest.fixture
def nodes_default_age(tmp_path: Path) -> Iterator[Nodes]:
    yield from two_nodes(tmp_path, max_age_s=1.0)  # TXSWITCH_SHARED_COPY_MAX_AGE_S's default


def test_a_replacement_on_node_b_moves_what_node_a_loaded_just_before(nodes_default_age: Nodes) -> None:
    nodes = nodes_default_age
    lost, new = nodes.world.issue(1_000), nodes.world.issue(100)
    assert nodes.on_b.balance(lost) == 1_000  # node B's card actor holds a copy of the card
    assert nodes.on_a.load(lost, 500).response_code == "00"  # durable: the card holds 1,500
    request = bo.ReplaceCardRequest(
        lost_card=pb.CardRef(card_number=lost),
        replacement_card=pb.CardRef(card_number=new),
        request_id=new_txn(),
    )
    moved = nodes.on_b_as_admin("ReplaceCard", request).moved.amount_minor
    time.sleep(1.2)
    left = nodes.on_b.balance(lost)
    assert (moved, left, nodes.on_b.balance(new)) == (1_500, 0, 1_600), "money left on the lost card"


@pytest.fixture
def nodes_lasting_copies(tmp_path: Path) -> Iterator[Nodes]:
    yield from two_nodes(tmp_path, max_age_s=60.0)  # node A's copy outlives the test: always stale


def test_a_load_on_node_a_onto_a_card_node_b_replaced_meanwhile_moves_nothing(
    nodes_lasting_copies: Nodes,
) -> None:
    nodes = nodes_lasting_copies
    lost, new = nodes.world.issue(1_000), nodes.world.issue(100)
    assert nodes.on_a.balance(lost) == 1_000  # node A's card actor holds a copy: the card active
    request = bo.ReplaceCardRequest(
        lost_card=pb.CardRef(card_number=lost),
        replacement_card=pb.CardRef(card_number=new),
        request_id=new_txn(),
    )
    assert nodes.on_b_as_admin("ReplaceCard", request).moved.amount_minor == 1_000
    answer = nodes.on_a.load(lost, 500)  # decided on node A's copy, taken before the replacement
    held = (card_balance(nodes.world, lost), card_balance(nodes.world, new))
    assert (answer.response_code, held) == ("96", (0, 1_100)), "a load stranded on the lost card"
    assert "nothing was moved" in answer.message
    assert_ledger_clean(nodes.world)


def _give_back(nodes: Nodes, how: str, original: str) -> pb.TransactionResponse:
    match how:
        case "refund":
            return nodes.on_a.refund(original, 300)
        case "cancel":
            return nodes.on_a.cancel(original)
    return nodes.on_a.reversal(original)


@pytest.mark.parametrize("how", ["refund", "cancel", "reversal"])
def test_money_given_back_on_node_a_onto_a_card_node_b_replaced_meanwhile_follows_to_the_replacement(
    nodes_lasting_copies: Nodes, how: str
) -> None:
    nodes = nodes_lasting_copies
    lost, new = nodes.world.issue(1_000), nodes.world.issue(100)
    redemption = new_txn()
    assert nodes.on_a.redeem(lost, 300, redemption).response_code == "00"  # node A's copy: the card active
    request = bo.ReplaceCardRequest(
        lost_card=pb.CardRef(card_number=lost),
        replacement_card=pb.CardRef(card_number=new),
        request_id=new_txn(),
    )
    assert nodes.on_b_as_admin("ReplaceCard", request).moved.amount_minor == 700
    answer = _give_back(nodes, how, redemption)  # decided on node A's copy, taken before the replacement
    assert answer.response_code == "00", answer.message  # the shop gives the money back: never declined
    deadline = time.monotonic() + 5
    while card_balance(nodes.world, new) != 1_100 and time.monotonic() < deadline:
        time.sleep(0.05)
    held = (card_balance(nodes.world, lost), card_balance(nodes.world, new))
    assert held == (0, 1_100), "money given back stranded on the lost card until a restart"
    assert_ledger_clean(nodes.world)
