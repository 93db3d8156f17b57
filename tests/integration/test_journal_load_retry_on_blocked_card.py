"""A load sent again under an id already stored, on a card blocked or replaced since its first
answer: the retry must get the stored answer (the approval), not a decline of a load that landed."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from switch.domain import ledger
from switch.domain.cards import CardStatus
from switch.store.journal import CardChange, Write, commit_batch
from tests.integration.journal_world import (
    CEILING,
    PROGRAMME,
    TERMINAL,
    card_balance,
    database_url,  # noqa: F401  (fixture)
    issue,
    make_world,
    record,
)


def _load(txn: str, card: str, amount_minor: int) -> Write:
    """A load as a card actor on a node sharing its cards writes it (Write.active_card)."""
    entry = ledger.load_entry(f"txn:{TERMINAL}:{txn}", "EUR", card, PROGRAMME, amount_minor, 0, CEILING)
    return Write(record=record(txn, "load", card, amount_minor), entry=entry, active_card=card)


@pytest.mark.parametrize(
    ("status", "replaced_by"),
    [
        (CardStatus.blocked, None),  # blocked by the office after the load landed
        (CardStatus.lost, "card_b"),  # replaced on another node after the load landed
    ],
)
def test_a_stored_load_sent_again_on_a_card_no_longer_active_is_answered_as_stored(
    database_url: str,  # noqa: F811
    status: CardStatus,
    replaced_by: str | None,
) -> None:
    engine: Engine = make_world(database_url)
    try:
        issue(engine, "card_a")
        issue(engine, "card_b")
        assert commit_batch(engine, [_load("t1", "card_a", 300)]).results[0].ok
        change = CardChange("card_a", status, status.value, "by the office", "ops", replaced_by)
        assert commit_batch(engine, [Write(card_changes=(change,))]).results[0].ok
        again = commit_batch(engine, [_load("t1", "card_a", 300)]).results[0]
        balance_minor = card_balance(engine, "card_a")
    finally:
        engine.dispose()
    assert not again.ok
    assert balance_minor == 300, "the load landed once"
    # conflict: the card actor answers with the stored approval; card_not_active would decline it.
    assert again.conflict and again.card_not_active is None, again
