"""A batch must decide each write as if the writes before it in the batch had landed first: the
backstops of `apply_batch` are evaluated per kind of row for the whole batch instead."""

from __future__ import annotations

from sqlalchemy import Engine

from switch.domain import ledger
from switch.domain.cards import CardStatus
from switch.store.journal import CardChange, OriginalChange, Write, commit_batch
from tests.integration.journal_world import (
    CEILING,
    PROGRAMME,
    TERMINAL,
    card_balance,
    card_row,
    database_url,  # noqa: F401  (fixture)
    issue,
    make_world,
    record,
    redemption,
)


def test_a_load_after_a_cancel_in_one_batch_does_not_take_the_card_above_its_maximum(
    database_url: str,  # noqa: F811
) -> None:
    """The card's maximum is checked (capped postings) before the plain credits of the batch are
    added, even credits of writes that come before the load. One at a time the load is refused."""
    engine: Engine = make_world(database_url)
    try:
        issue(engine, "card_a", CEILING)  # full: 1,000 of 1,000
        assert commit_batch(engine, [redemption("t0", "card_a", 300)]).results[0].ok
        assert card_balance(engine, "card_a") == 700
        # The cancel of t0 as the card actor builds it: the redemption's entry reversed (no ceiling).
        undone = ledger.redemption_entry(
            f"txn:{TERMINAL}:t0", "EUR", "card_a", 300, merchant_id="mer_1", programme_id=PROGRAMME
        ).reversed(f"undo:{TERMINAL}:t0", "cancel")
        cancel = Write(
            record=record("t1", "cancel", "card_a", 300, original="t0"),
            entry=undone,
            original=OriginalChange(TERMINAL, "t0", "cancelled", require_unrefunded=True),
        )
        load = Write(
            record=record("t2", "load", "card_a", 300),
            entry=ledger.load_entry(f"txn:{TERMINAL}:t2", "EUR", "card_a", PROGRAMME, 300, 0, CEILING),
        )
        outcome = commit_batch(engine, [cancel, load])
        final = card_balance(engine, "card_a")
    finally:
        engine.dispose()
    assert outcome.results[0].ok
    assert final <= CEILING, f"card_a holds {final}, above its maximum of {CEILING}"
    assert not outcome.results[1].ok, "the load that would take the card past its maximum was approved"


def test_a_transfer_onto_a_card_replaced_earlier_in_the_same_batch_is_refused(
    database_url: str,  # noqa: F811
) -> None:
    """`active_card` ("A onto B while B onto C") is checked at the start of the batch, before the
    card changes of earlier writes of the same batch: B replaced by C, then A's balance onto B,
    lands on B. One at a time the second write is refused and A keeps its money."""
    engine: Engine = make_world(database_url)
    try:
        issue(engine, "card_a", 200)
        issue(engine, "card_b")
        issue(engine, "card_c")
        # B (empty) replaced by C: what CardActor._transfer_out writes for B.
        b_onto_c = Write(
            card_changes=(
                CardChange("card_b", CardStatus.lost, "transferred", "replaced by card_c", "ops", "card_c"),
            ),
            active_card="card_c",
        )
        # A's 200 onto B: what CardActor._transfer_out writes for A.
        a_onto_b = Write(
            entry=ledger.card_transfer_entry("transfer:r-a", "EUR", "card_a", "card_b", 200, CEILING),
            card_changes=(
                CardChange(
                    "card_a", CardStatus.lost, "transferred", "balance moved to card_b", "ops", "card_b"
                ),
            ),
            active_card="card_b",
        )
        outcome = commit_batch(engine, [b_onto_c, a_onto_b])
        b_state, b_balance = card_row(engine, "card_b"), card_balance(engine, "card_b")
        a_balance = card_balance(engine, "card_a")
    finally:
        engine.dispose()
    assert outcome.results[0].ok
    assert b_state == ("lost", "card_c")
    assert not outcome.results[1].ok, f"A's balance landed on card_b, replaced by card_c: {b_balance}"
    assert (a_balance, b_balance) == (200, 0)
