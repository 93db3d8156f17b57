"""Which card a number means: cards issued here are known at once, others are read once, then known."""

from __future__ import annotations

from contextlib import AbstractContextManager

from sqlalchemy import Engine

from switch.admin import Admin
from switch.store.repository import Store
from tests.integration.harness import World, statements_run


def card_lookups(engine: Engine) -> AbstractContextManager[list[str]]:
    """The statements that look a card up by its number's hash, run on engine meanwhile."""
    return statements_run(engine, containing="WHERE cards.card_hash")


def test_a_card_issued_here_is_known_without_a_read(world: World) -> None:
    card = world.issue(1_000)
    with card_lookups(world.server.core.store.engine) as seen:
        balance = world.terminals[0].balance(card)
    assert balance == 1_000
    assert seen == []


def test_a_card_issued_by_another_node_is_read_once(world: World) -> None:
    core = world.server.core
    other_node = Admin(Store(core.store.engine), bytes.fromhex(core.settings.card_hash_key_hex))
    card = other_node.issue_card(world.gift_programme)
    with card_lookups(core.store.engine) as seen:
        assert world.terminals[0].balance(card.card_number) == 0
        assert world.terminals[1].balance(card.card_number) == 0
    assert len(seen) == 1
