"""A lost card's whole balance moves to its replacement, whatever another node did just before."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from protocols.wire import backoffice_pb2 as bo
from protocols.wire import terminal_pb2 as pb
from tests.integration.harness import new_txn
from tests.integration.nodes.conftest import Nodes, two_nodes


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
