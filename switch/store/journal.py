"""What one durable write is, and how a batch of them is applied in one database transaction."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass

from sqlalchemy import Connection, and_, insert, update
from sqlalchemy.exc import IntegrityError

from switch.domain.cards import CardStatus
from switch.domain.ledger import JournalEntry
from switch.store.schema import accounts, card_events, cards, journal_entries, postings, transactions


@dataclass(frozen=True, slots=True)
class TransactionRecord:
    """The row that records a terminal transaction and the answer it got."""

    source: str
    transaction_id: str
    transaction_type: str
    fingerprint: str
    currency: str
    result: str
    status: str
    card_id: str | None = None
    merchant_id: str | None = None
    requested_minor: int = 0
    approved_minor: int = 0
    balance_after_minor: int | None = None
    cardholder_part_minor: int = 0
    funder_part_minor: int = 0
    detail: str = ""
    authorization_code: str = ""
    period_number: int = 0
    original_transaction_id: str = ""
    card_masked: str = ""
    payment_method: str = "stored_value"


@dataclass(frozen=True, slots=True)
class OriginalChange:
    """A conditional change of an earlier transaction: refunded further, cancelled or reversed."""

    source: str
    transaction_id: str
    new_status: str
    refund_minor: int = 0
    require_unrefunded: bool = False


@dataclass(frozen=True, slots=True)
class CardChange:
    card_id: str
    status: CardStatus
    event_kind: str
    detail: str
    actor: str
    replaced_by: str | None = None


@dataclass(frozen=True, slots=True)
class Write:
    record: TransactionRecord | None = None
    # A reversal of a transaction never seen holds its id, so a late original cannot move money.
    tombstone: TransactionRecord | None = None
    entry: JournalEntry | None = None
    original: OriginalChange | None = None
    card_changes: tuple[CardChange, ...] = ()


class BackstopError(Exception):
    """A backstop condition failed: the write would overdraw, repeat, or undo twice."""


@dataclass(frozen=True, slots=True)
class WriteResult:
    ok: bool
    entry_id: int | None = None
    problem: str = ""
    conflict: bool = False  # the transaction id was stored already (by a replay or another node)


def apply_batch(conn: Connection, writes: list[Write], now: dt.datetime) -> list[WriteResult]:
    """Apply all writes; raises BackstopError or IntegrityError when any one fails."""
    credits: dict[str, int] = defaultdict(int)
    results = [apply_write(conn, write, now, credits) for write in writes]
    _apply_credits(conn, credits)
    return results


def apply_alone(conn: Connection, write: Write, now: dt.datetime) -> WriteResult:
    return apply_batch(conn, [write], now)[0]


def apply_write(conn: Connection, write: Write, now: dt.datetime, credits: dict[str, int]) -> WriteResult:
    if write.original is not None:
        _change_original(conn, write.original)
    records = [r for r in (write.record, write.tombstone) if r is not None]
    if records:
        conn.execute(insert(transactions), [{**_record_values(r), "created_at": now} for r in records])
    entry_id = None
    if write.entry is not None:
        entry_id = _post_entry(conn, write.entry, now, credits)
    for change in write.card_changes:
        _change_card(conn, change, now)
    return WriteResult(True, entry_id)


def _record_values(record: TransactionRecord) -> dict[str, object]:
    return {name: getattr(record, name) for name in TransactionRecord.__slots__}


def _change_original(conn: Connection, change: OriginalChange) -> None:
    row = transactions.c
    conditions = [
        row.source == change.source,
        row.transaction_id == change.transaction_id,
        row.status == "approved",
        row.refunded_minor + change.refund_minor <= row.approved_minor,
    ]
    if change.require_unrefunded:
        conditions.append(row.refunded_minor == 0)
    result = conn.execute(
        update(transactions)
        .where(and_(*conditions))
        .values(status=change.new_status, refunded_minor=row.refunded_minor + change.refund_minor)
    )
    if result.rowcount != 1:
        raise BackstopError(f"original {change.transaction_id} can no longer be {change.new_status}")


def _post_entry(conn: Connection, entry: JournalEntry, now: dt.datetime, credits: dict[str, int]) -> int:
    for posting in entry.postings:
        if posting.guarded:
            # The backstop across nodes: never let a card go below zero, whatever an actor believed.
            result = conn.execute(
                update(accounts)
                .where(
                    accounts.c.account_id == posting.account_id,
                    accounts.c.balance_minor + posting.amount_minor >= 0,
                )
                .values(balance_minor=accounts.c.balance_minor + posting.amount_minor)
            )
            if result.rowcount != 1:
                raise BackstopError(f"{posting.account_id} would go below zero")
        else:
            credits[posting.account_id] += posting.amount_minor
    entry_id = conn.execute(
        insert(journal_entries).returning(journal_entries.c.entry_id),
        {
            "idempotency_key": entry.idempotency_key,
            "kind": entry.kind,
            "currency": entry.currency,
            "created_at": now,
        },
    ).scalar_one()
    conn.execute(
        insert(postings),
        [
            {"entry_id": entry_id, "account_id": p.account_id, "amount_minor": p.amount_minor}
            for p in entry.postings
        ],
    )
    return int(entry_id)


def _apply_credits(conn: Connection, credits: dict[str, int]) -> None:
    """Unguarded postings of the whole batch, one update per account."""
    for account_id, delta_minor in sorted(credits.items()):
        if delta_minor == 0:
            continue
        result = conn.execute(
            update(accounts)
            .where(accounts.c.account_id == account_id)
            .values(balance_minor=accounts.c.balance_minor + delta_minor)
        )
        assert result.rowcount == 1, f"account {account_id} does not exist"


def _change_card(conn: Connection, change: CardChange, now: dt.datetime) -> None:
    values: dict[str, object] = {"status": change.status}
    if change.replaced_by is not None:
        values["replaced_by"] = change.replaced_by
    conn.execute(update(cards).where(cards.c.card_id == change.card_id).values(**values))
    conn.execute(
        insert(card_events),
        {
            "card_id": change.card_id,
            "kind": change.event_kind,
            "detail": change.detail,
            "actor": change.actor,
            "at": now,
        },
    )


BACKSTOP_ERRORS = (BackstopError, IntegrityError)
