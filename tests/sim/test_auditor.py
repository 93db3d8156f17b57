"""The auditor on hand-built ledgers: a clean run, a planted double spend, a planted lost approval."""

from __future__ import annotations

from dataclasses import replace

from terminal_sim.auditor import Violation, audit, format_report
from terminal_sim.ledger import (
    CardBalance,
    JournalEntry,
    LedgerSnapshot,
    LedgerTransaction,
    Posting,
)
from terminal_sim.records import Exchange, Operation, Outcome

TERMINAL = "trm_1"
CARD_A, CARD_B = "card_a", "card_b"
MERCHANT = "merchant:m1:payable"
FLOAT = "programme:p1:float"


def card_account(card_id: str) -> str:
    return f"card:{card_id}"


def answered(
    transaction_id: str,
    operation: Operation,
    card_id: str,
    code: str,
    approved_minor: int,
    **extra: object,
) -> Exchange:
    return Exchange(
        terminal_id=TERMINAL,
        transaction_id=transaction_id,
        operation=operation,
        outcome=Outcome.answered,
        card_id=card_id,
        amount_requested_minor=approved_minor,
        amount_approved_minor=approved_minor,
        response_code=code,
        **extra,  # type: ignore[arg-type]
    )


def entry(sequence: int, transaction_id: str, card_id: str, card_minor: int, **extra: object) -> JournalEntry:
    other = MERCHANT if card_minor < 0 else FLOAT
    return JournalEntry(
        entry_id=f"e{sequence}",
        sequence=sequence,
        postings=(Posting(card_account(card_id), card_minor), Posting(other, -card_minor)),
        terminal_id=TERMINAL,
        transaction_id=transaction_id,
        **extra,  # type: ignore[arg-type]
    )


def stored(transaction_id: str, operation: str, status: str, card_id: str, amount: int) -> LedgerTransaction:
    return LedgerTransaction(TERMINAL, transaction_id, operation, status, card_id, amount)


def clean_run() -> tuple[list[Exchange], LedgerSnapshot]:
    """Redeem 10.00 on A (approved), a declined redeem on B, a load of 5.00 on B, a cancel
    of the load, and a redemption whose answer was lost and that the switch did approve."""
    exchanges = [
        answered("t1", Operation.redeem, CARD_A, "00", 1_000),
        answered("t1", Operation.redeem, CARD_A, "00", 1_000, duplicate=True),
        answered("t2", Operation.redeem, CARD_B, "51", 0),
        answered("t3", Operation.load, CARD_B, "00", 500),
        answered(
            "t4",
            Operation.cancel,
            CARD_B,
            "00",
            500,
            original_transaction_id="t3",
            original_operation=Operation.load,
        ),
        Exchange(
            TERMINAL, "t5", Operation.redeem, Outcome.timed_out, card_id=CARD_A, amount_requested_minor=300
        ),
    ]
    entries = (
        entry(1, "t1", CARD_A, -1_000),
        entry(2, "t3", CARD_B, 500),
        entry(3, "t4", CARD_B, -500, reverses_entry_id="e2"),
        entry(4, "t5", CARD_A, -300),
    )
    transactions = {
        (TERMINAL, "t1"): stored("t1", "redeem", "approved", CARD_A, 1_000),
        (TERMINAL, "t2"): stored("t2", "redeem", "declined", CARD_B, 0),
        (TERMINAL, "t3"): stored("t3", "load", "cancelled", CARD_B, 500),
        (TERMINAL, "t4"): stored("t4", "cancel", "approved", CARD_B, 500),
        (TERMINAL, "t5"): stored("t5", "redeem", "approved", CARD_A, 300),
    }
    cards = {
        CARD_A: CardBalance(CARD_A, card_account(CARD_A), 2_000, 700),
        CARD_B: CardBalance(CARD_B, card_account(CARD_B), 100, 100),
    }
    return exchanges, LedgerSnapshot(cards, entries, transactions)


def test_clean_run_reports_nothing() -> None:
    exchanges, snapshot = clean_run()
    report = audit(exchanges, snapshot)
    assert report.findings == ()
    assert report.clean
    assert report.unknown_outcomes == 1
    assert set(report.counters().values()) == {0}
    assert format_report(report)[-1].startswith("audit: clean")


def test_planted_double_spend_and_lost_approval_are_both_reported() -> None:
    exchanges, snapshot = clean_run()
    # Double spend: the duplicate of t1 was applied a second time.
    spent_twice = entry(5, "t1", CARD_A, -1_000)
    # Lost approval: a redemption the terminal saw approved never reached the ledger.
    exchanges.append(answered("t6", Operation.redeem, CARD_B, "00", 50))
    card_a = replace(snapshot.cards[CARD_A], end_minor=700 - 1_000)
    planted = LedgerSnapshot(
        {CARD_A: card_a, CARD_B: snapshot.cards[CARD_B]},
        (*snapshot.entries, spent_twice),
        snapshot.transactions,
    )
    report = audit(exchanges, planted)
    lines = format_report(report)
    assert report.count(Violation.double_spend) == 1
    assert report.count(Violation.lost_approval) == 1
    assert report.counters()["double_spends"] == 1
    assert report.counters()["lost_approvals"] == 1
    # The overdrawn card and the mismatched balances are reported too, each on its own line.
    assert report.count(Violation.negative_balance) == 1
    assert any("double_spend" in line and "txn=t1" in line for line in lines)
    assert any("lost_approval" in line and "txn=t6" in line for line in lines)


def test_declined_that_moved_money_is_reported() -> None:
    exchanges, snapshot = clean_run()
    moved = entry(5, "t2", CARD_B, -100)
    card_b = replace(snapshot.cards[CARD_B], end_minor=0)
    report = audit(
        exchanges,
        LedgerSnapshot({**snapshot.cards, CARD_B: card_b}, (*snapshot.entries, moved), snapshot.transactions),
    )
    assert report.count(Violation.declined_moved_money) == 1


def test_unbalanced_entry_and_wrong_card_balance_are_ledger_imbalances() -> None:
    exchanges, snapshot = clean_run()
    broken = JournalEntry("e9", 9, (Posting(MERCHANT, 5),))
    card_a = replace(snapshot.cards[CARD_A], end_minor=701)
    report = audit(
        exchanges,
        LedgerSnapshot(
            {**snapshot.cards, CARD_A: card_a}, (*snapshot.entries, broken), snapshot.transactions
        ),
    )
    # One entry that does not sum to zero, one card whose balance is not start plus postings.
    assert report.counters()["ledger_imbalances"] == 2
    assert report.count(Violation.balance_mismatch) == 1


def test_reversed_after_timeout_must_not_move_money() -> None:
    exchanges = [
        Exchange(
            TERMINAL, "t1", Operation.redeem, Outcome.timed_out, card_id=CARD_A, amount_requested_minor=400
        ),
        Exchange(
            TERMINAL,
            "t1",
            Operation.reversal,
            Outcome.answered,
            card_id=CARD_A,
            response_code="00",
            status="reversed",
        ),
    ]
    cards = {CARD_A: CardBalance(CARD_A, card_account(CARD_A), 1_000, 1_000)}
    transactions = {(TERMINAL, "t1"): stored("t1", "redeem", "reversed", CARD_A, 400)}
    undone = (entry(1, "t1", CARD_A, -400), entry(2, "t1", CARD_A, 400, reverses_entry_id="e1"))
    assert audit(exchanges, LedgerSnapshot(cards, undone, transactions)).clean
    # The same reversal acknowledged, but the switch kept the money.
    kept = (entry(1, "t1", CARD_A, -400),)
    cards_kept = {CARD_A: CardBalance(CARD_A, card_account(CARD_A), 1_000, 600)}
    report = audit(exchanges, LedgerSnapshot(cards_kept, kept, transactions))
    assert report.count(Violation.declined_moved_money) == 1


def test_replay_with_a_different_answer_is_reported() -> None:
    exchanges, snapshot = clean_run()
    exchanges.append(answered("t1", Operation.redeem, CARD_A, "51", 0, duplicate=True))
    report = audit(exchanges, snapshot)
    assert report.count(Violation.replay_answer_differs) == 1
