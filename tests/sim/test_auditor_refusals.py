"""The auditor on what a terminal can legitimately see (session 22 audit of the simulator)."""

from __future__ import annotations

from terminal_sim.auditor import Violation, audit
from terminal_sim.ledger import CardBalance, JournalEntry, LedgerSnapshot, LedgerTransaction, Posting
from terminal_sim.records import Exchange, Operation, Outcome

TERMINAL = "trm_1"
CARD = "card_a"
MERCHANT = "merchant:m1:payable"
FLOAT = "programme:p1:float"


def account(card_id: str) -> str:
    return f"card:{card_id}"


def answered(
    txn: str, op: Operation, code: str, approved: int, requested: int | None = None, **extra: object
) -> Exchange:
    return Exchange(
        TERMINAL,
        txn,
        op,
        Outcome.answered,
        card_id=CARD,
        amount_requested_minor=approved if requested is None else requested,
        amount_approved_minor=approved,
        response_code=code,
        **extra,  # type: ignore[arg-type]
    )


def entry(seq: int, txn: str, card_minor: int, **extra: object) -> JournalEntry:
    other = MERCHANT if card_minor < 0 else FLOAT
    return JournalEntry(
        f"e{seq}",
        seq,
        (Posting(account(CARD), card_minor), Posting(other, -card_minor)),
        TERMINAL,
        txn,
        **extra,  # type: ignore[arg-type]
    )


def stored(txn: str, op: str, status: str, amount: int) -> LedgerTransaction:
    return LedgerTransaction(TERMINAL, txn, op, status, CARD, amount)


def card(start: int, end: int) -> dict[str, CardBalance]:
    return {CARD: CardBalance(CARD, account(CARD), start, end)}


def lines(report: object) -> list[str]:
    return [finding.line() for finding in report.findings]  # type: ignore[attr-defined]


def load_told_approved_then_reversal_refused(code: str) -> list[Exchange]:
    """Load t1 of 5.00 sent twice at once (duplicate fault): copy 0 failed (UNAVAILABLE), copy 1
    was answered approved. The terminal recovers copy 0 with a Reversal, which the switch refuses
    (51: the loaded value was spent meanwhile; or 12: the day is closed). The load stands: the
    terminal was told approved, and nothing it saw undid it."""
    return [
        Exchange(
            TERMINAL,
            "t1",
            Operation.load,
            Outcome.failed,
            card_id=CARD,
            amount_requested_minor=500,
            grpc_code="UNAVAILABLE",
        ),
        answered("t1", Operation.load, "00", 500, duplicate=True),
        Exchange(
            TERMINAL,
            "t1",
            Operation.reversal,
            Outcome.answered,
            card_id=CARD,
            response_code=code,
            status="declined",
        ),
    ]


def test_a_refused_reversal_does_not_excuse_an_approval_the_ledger_undid() -> None:
    """The switch answered the reversal 12 (declined) yet reversed the load anyway: the terminal
    was told approved, and the switch took the 5.00 back without telling it. A lost approval, as
    for a refused cancel (session 21 fixed that one for cancels only)."""
    exchanges = load_told_approved_then_reversal_refused("12")
    snapshot = LedgerSnapshot(
        card(1_000, 1_000),
        (entry(1, "t1", 500), entry(2, "t1", -500, reverses_entry_id="e1")),
        {(TERMINAL, "t1"): stored("t1", "load", "reversed", 500)},
    )
    report = audit(exchanges, snapshot)
    assert report.count(Violation.lost_approval) == 1, lines(report)


def test_a_refused_reversal_does_not_excuse_an_approval_that_moved_less() -> None:
    """The same load answered approved for 5.00; the ledger credited 2.00 only."""
    exchanges = load_told_approved_then_reversal_refused("51")
    snapshot = LedgerSnapshot(
        card(1_000, 1_200),
        (entry(1, "t1", 200),),
        {(TERMINAL, "t1"): stored("t1", "load", "approved", 500)},
    )
    report = audit(exchanges, snapshot)
    assert report.count(Violation.lost_approval) == 1, lines(report)


def test_a_repeat_after_a_96_not_stored_is_judged_afresh() -> None:
    """Redeem t1 sent twice back to back. The first copy was answered 96 ("not stored; nothing
    was moved", journal queue full: the switch keeps no answer, so the same id is judged afresh,
    actors/terminal_actor.py _submit); the second copy was approved and took 3.00. A correct run:
    the terminal was told approved in the end, and the card moved what it was told."""
    exchanges = [
        answered("t1", Operation.redeem, "96", 0, requested=300),
        answered("t1", Operation.redeem, "00", 300, duplicate=True),
    ]
    snapshot = LedgerSnapshot(
        card(1_000, 700),
        (entry(1, "t1", -300),),
        {(TERMINAL, "t1"): stored("t1", "redeem", "approved", 300)},
    )
    report = audit(exchanges, snapshot)
    assert report.count(Violation.declined_moved_money) == 0, lines(report)
    assert report.count(Violation.balance_mismatch) == 0, lines(report)
    assert report.clean, lines(report)
