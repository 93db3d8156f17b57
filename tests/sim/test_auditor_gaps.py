"""Planted violations the auditor missed or misnamed, and a correct run it called wrong (an audit of
session 21): each test fails on the auditor before its fix."""

from __future__ import annotations

from terminal_sim.auditor import Violation, audit
from terminal_sim.ledger import CardBalance, JournalEntry, LedgerSnapshot, LedgerTransaction, Posting
from terminal_sim.records import Exchange, Operation, Outcome

TERMINAL = "trm_1"
CARD = "card_a"
MERCHANT = "merchant:m1:payable"


def account(card_id: str) -> str:
    return f"card:{card_id}"


def answered(txn: str, op: Operation, code: str, approved: int, **extra: object) -> Exchange:
    return Exchange(
        TERMINAL,
        txn,
        op,
        Outcome.answered,
        card_id=CARD,
        amount_requested_minor=approved,
        amount_approved_minor=approved,
        response_code=code,
        **extra,  # type: ignore[arg-type]
    )


def entry(seq: int, txn: str, card_minor: int, **extra: object) -> JournalEntry:
    return JournalEntry(
        f"e{seq}",
        seq,
        (Posting(account(CARD), card_minor), Posting(MERCHANT, -card_minor)),
        TERMINAL,
        txn,
        **extra,  # type: ignore[arg-type]
    )


def stored(txn: str, op: str, status: str, amount: int, original: str | None = None) -> LedgerTransaction:
    return LedgerTransaction(TERMINAL, txn, op, status, CARD, amount, original)


def card(start: int, end: int) -> dict[str, CardBalance]:
    return {CARD: CardBalance(CARD, account(CARD), start, end)}


def declined_cancel_of(original: str) -> Exchange:
    # A cancel signed with a wrong employee PIN: refused (55), nothing undone.
    return answered(
        "t2", Operation.cancel, "55", 0, original_transaction_id=original, original_operation=Operation.redeem
    )


def test_a_declined_cancel_does_not_excuse_a_lost_approval() -> None:
    """Redeem t1 approved 5.00; the switch stored it approved but never moved the money.
    The terminal later tried to cancel t1 and was refused (wrong PIN)."""
    exchanges = [answered("t1", Operation.redeem, "00", 500), declined_cancel_of("t1")]
    snapshot = LedgerSnapshot(
        card(2_000, 2_000),
        (),
        {
            (TERMINAL, "t1"): stored("t1", "redeem", "approved", 500),
            (TERMINAL, "t2"): stored("t2", "cancel", "declined", 0, "t1"),
        },
    )
    report = audit(exchanges, snapshot)
    # Without the refused cancel the same ledger is a lost approval; with it, only a balance mismatch.
    assert audit(exchanges[:1], snapshot).count(Violation.lost_approval) == 1
    assert report.count(Violation.lost_approval) == 1, [f.line() for f in report.findings]


def test_a_cancel_refused_at_the_terminal_that_undid_the_original_is_reported() -> None:
    """Redeem t1 approved 5.00; cancel t2 answered 55 (refused), yet the switch undid t1.
    ledger_source gives the undo entry to t1's key, since the stored cancel is not approved."""
    exchanges = [answered("t1", Operation.redeem, "00", 500), declined_cancel_of("t1")]
    snapshot = LedgerSnapshot(
        card(2_000, 2_000),
        (entry(1, "t1", -500), entry(2, "t1", 500, reverses_entry_id="e1")),
        {
            (TERMINAL, "t1"): stored("t1", "redeem", "cancelled", 500),
            (TERMINAL, "t2"): stored("t2", "cancel", "declined", 0, "t1"),
        },
    )
    report = audit(exchanges, snapshot)
    lines = [f.line() for f in report.findings]
    assert report.count(Violation.lost_approval) + report.count(Violation.declined_moved_money) >= 1, lines


def abandoned_redeem(requested: int) -> Exchange:
    return Exchange(
        TERMINAL, "t1", Operation.redeem, Outcome.abandoned, card_id=CARD, amount_requested_minor=requested
    )


def test_an_in_doubt_redeem_that_took_ten_times_what_was_asked_is_reported() -> None:
    """A redemption of 3.00 the terminal abandoned; the switch took 30.00 for it in one entry."""
    snapshot = LedgerSnapshot(
        card(5_000, 2_000),
        (entry(1, "t1", -3_000),),
        {(TERMINAL, "t1"): stored("t1", "redeem", "approved", 3_000)},
    )
    report = audit([abandoned_redeem(300)], snapshot)
    assert not report.clean, "a 3.00 redemption moved 30.00 and the audit is clean"


def test_an_in_doubt_redeem_that_credited_the_card_is_reported() -> None:
    """A redemption of 3.00 the terminal abandoned; the switch added 3.00 to the card."""
    snapshot = LedgerSnapshot(
        card(5_000, 5_300),
        (entry(1, "t1", 300),),
        {(TERMINAL, "t1"): stored("t1", "redeem", "approved", 300)},
    )
    report = audit([abandoned_redeem(300)], snapshot)
    assert not report.clean, "a redemption that paid money onto the card is reported clean"


def test_an_in_doubt_redeem_the_ledger_itself_declined_must_not_move_money() -> None:
    """An abandoned redemption stored as declined, whose entry still took the money."""
    snapshot = LedgerSnapshot(
        card(5_000, 4_700),
        (entry(1, "t1", -300),),
        {(TERMINAL, "t1"): stored("t1", "redeem", "declined", 0)},
    )
    report = audit([abandoned_redeem(300)], snapshot)
    assert not report.clean, "a declined (in the ledger) redemption moved money and the audit is clean"


def test_status_not_found_then_an_unsettled_reversal_leaves_the_outcome_unknown() -> None:
    """The terminal gave up on redeem t1 within milliseconds, asked TransactionStatus before t1
    reached the switch (found=False), then sent a Reversal that the switch refused unjudged
    (96, journal queue full: nothing stored, no tombstone). The terminal never learned t1's
    outcome (it treats not-found as unsettled, terminal.py _recover); t1 then landed, approved.
    A correct run: the auditor must resolve t1 from the ledger, as for an abandoned request."""
    exchanges = [
        Exchange(
            TERMINAL, "t1", Operation.redeem, Outcome.timed_out, card_id=CARD, amount_requested_minor=300
        ),
        Exchange(
            TERMINAL, "t1", Operation.status, Outcome.answered, card_id=CARD, status="unknown", found=False
        ),
        Exchange(
            TERMINAL,
            "t1",
            Operation.reversal,
            Outcome.answered,
            card_id=CARD,
            response_code="96",
            status="declined",
        ),
    ]
    snapshot = LedgerSnapshot(
        card(5_000, 4_700),
        (entry(1, "t1", -300),),
        {(TERMINAL, "t1"): stored("t1", "redeem", "approved", 300)},
    )
    report = audit(exchanges, snapshot)
    assert report.clean, [f.line() for f in report.findings]
