"""Which card a number means: cards issued here are known at once, others are read once, then known."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, event

from switch.admin import Admin
from switch.store.repository import Store
from tests.integration.harness import World


@contextmanager
def card_lookups(engine: Engine) -> Iterator[list[str]]:
    """The statements that look a card up by its number's hash, run on engine meanwhile."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if "WHERE cards.card_hash" in statement:
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


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
